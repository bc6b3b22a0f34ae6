"""Alembic environment: runs migrations on the engine recruit hands over, or on RECRUIT_DATABASE_URL."""

from alembic import context

from recruit.db import make_engine
from recruit.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine") or make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("recruit runs migrations online only: use `recruit db upgrade`.")
run_migrations_online()
