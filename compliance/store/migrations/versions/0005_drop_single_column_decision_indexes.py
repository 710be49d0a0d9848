"""Drop the routing log's single-column indexes that the search and report indexes replaced.

Revision 0001 indexed `decided_at`, `tenant_id`, `outcome`, `chosen_region`, `client_country`
and `subject_country` one by one. Since 0004, audit searches walk `ix_routing_decisions_search`
(decided_at first, every filter inside it), reports read `ix_routing_decisions_report`, and
retention deletes by `decided_at` through the search index. The six kept every insert updating
six more B-trees: on SQLite ~38 µs of CPU per routing record (104 against 67 µs in batches of
four), in the database writer thread that shares the gateway's core.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    "decided_at",
    "tenant_id",
    "outcome",
    "chosen_region",
    "client_country",
    "subject_country",
)


def upgrade() -> None:
    """Drop the six single-column indexes."""
    for column in _COLUMNS:
        op.drop_index(op.f(f"ix_routing_decisions_{column}"), table_name="routing_decisions")


def downgrade() -> None:
    """Create them again."""
    for column in _COLUMNS:
        op.create_index(op.f(f"ix_routing_decisions_{column}"), "routing_decisions", [column])
