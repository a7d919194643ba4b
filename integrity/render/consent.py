"""What an operator is shown before typing consent: the lines of the plan they agree to.

The library asks (integrity.recovery.consent) about a subject, a restore plan or a repair
preview; how that subject reads is the CLI's business, so the CLI hands this function in
as the consent's `describe`."""

from __future__ import annotations

from typing import Any


def consent_lines(subject: Any) -> list[str]:
    from integrity.recovery.repair import RepairReport
    from integrity.recovery.restore import RestorePlan

    if isinstance(subject, RestorePlan):
        from integrity.render.restore import plan_lines

        return plan_lines(subject)
    if isinstance(subject, RepairReport):
        from integrity.render.recovery_diff import repair_plan_lines

        return repair_plan_lines(subject)
    return []
