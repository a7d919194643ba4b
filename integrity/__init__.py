"""`integrity`: backups, verification, restores, drills, migration dry runs and audits
for the typing game's database."""

__version__ = "0.1.0"
