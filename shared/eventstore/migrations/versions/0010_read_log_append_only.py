"""The read log is append-only in the database too: an UPDATE, DELETE (or, on
PostgreSQL, TRUNCATE) of ``personal_data_reads`` is refused by a trigger, whoever
connects — not only by the application, which never does either.

Revision ID: 0010_read_log_append_only
Revises: 0009_customer_aliases
Create Date: 2026-11-28
"""

from alembic import op

revision = "0010_read_log_append_only"
down_revision = "0009_customer_aliases"
branch_labels = None
depends_on = None

_REFUSED = "the read log is append-only"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER personal_data_reads_no_{action.lower()} BEFORE {action} "
                f"ON personal_data_reads BEGIN SELECT RAISE(ABORT, '{_REFUSED}'); END"
            )
        return
    op.execute(
        "CREATE FUNCTION personal_data_reads_append_only() RETURNS trigger LANGUAGE plpgsql "
        f"AS $$ BEGIN RAISE EXCEPTION '{_REFUSED}'; END $$"
    )
    op.execute(
        "CREATE TRIGGER personal_data_reads_no_change BEFORE UPDATE OR DELETE "
        "ON personal_data_reads FOR EACH ROW EXECUTE FUNCTION personal_data_reads_append_only()"
    )
    op.execute(
        "CREATE TRIGGER personal_data_reads_no_truncate BEFORE TRUNCATE ON personal_data_reads "
        "FOR EACH STATEMENT EXECUTE FUNCTION personal_data_reads_append_only()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER personal_data_reads_no_update")
        op.execute("DROP TRIGGER personal_data_reads_no_delete")
        return
    op.execute("DROP TRIGGER personal_data_reads_no_truncate ON personal_data_reads")
    op.execute("DROP TRIGGER personal_data_reads_no_change ON personal_data_reads")
    op.execute("DROP FUNCTION personal_data_reads_append_only()")
