"""Where backup repositories live: a local directory or S3-compatible object storage.

`location` parses what `[backups] repository` names (light: no client library imported);
`s3` is the one module that talks to object storage (boto3, imported when first used);
`leases` holds locks across hosts on it.
"""
