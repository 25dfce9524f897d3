"""`hub user add EMAIL --role viewer|operator`: staff accounts of the sync log pages.

Passwords are prompted (hidden, twice) and stored hashed (werkzeug's scrypt); they never
appear in the shell history or the process list.
"""
from __future__ import annotations

import click
from sqlalchemy import select

from hub.commands import command_hub
from hub.models import ROLES, StaffUser
from hub.values import normalize_email

MIN_PASSWORD = 10


def _hub():
    # A fresh install may add its first user before anything else: migrations first.
    return command_hub(upgrade=True, check_rules=False)


def _password(value: str) -> str:
    if len(value) < MIN_PASSWORD:
        raise click.BadParameter(f"use at least {MIN_PASSWORD} characters")
    return value


def _email(value: str) -> str:
    email = normalize_email(value)
    if not email:
        raise click.BadParameter(f"{value!r} is not an email address")
    return email


@click.group("user")
def command():
    """Staff accounts of the sync log pages (viewers read; operators also retry and replay)."""


@command.command("add")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True,
              help="viewer: reads the sync log; operator: also retries, replays and resends.")
@click.password_option(prompt="Password", confirmation_prompt="Repeat the password",
                       help="Prompted (hidden, twice) when not given.")
def add(email, role, password):
    """Add a staff user."""
    email = _email(email)
    _password(password)
    hub = _hub()
    with hub.storage.session() as session:
        if session.scalar(select(StaffUser).where(StaffUser.email == email)) is not None:
            raise click.ClickException(f"{email} already has an account; "
                                       f"`hub user password {email}` sets a new password")
        user = StaffUser(email=email, role=role)
        user.set_password(password)
        session.add(user)
    click.echo(f"added {email} ({role}); they log in at {hub.settings.HUB_BASE_URL}/login")


@command.command("password")
@click.argument("email")
@click.password_option(prompt="New password", confirmation_prompt="Repeat the password")
def password_(email, password):
    """Set a new password for a staff user."""
    email = _email(email)
    _password(password)
    with _hub().storage.session() as session:
        user = session.scalar(select(StaffUser).where(StaffUser.email == email))
        if user is None:
            raise click.ClickException(f"no staff user {email}")
        user.set_password(password)
    click.echo(f"password of {email} changed")


@command.command("role")
@click.argument("email")
@click.argument("role", type=click.Choice(ROLES))
def role_(email, role):
    """Make a staff user a viewer or an operator."""
    email = _email(email)
    with _hub().storage.session() as session:
        user = session.scalar(select(StaffUser).where(StaffUser.email == email))
        if user is None:
            raise click.ClickException(f"no staff user {email}")
        user.role = role
    click.echo(f"{email} is now {role}")


@command.command("list")
def list_():
    """Every staff user and their role."""
    with _hub().storage.session() as session:
        users = session.scalars(select(StaffUser).order_by(StaffUser.email)).all()
        for user in users:
            click.echo(f"{user.email}\t{user.role}\tsince {user.created_at:%Y-%m-%d}")
        if not users:
            click.echo("no staff users yet: hub user add EMAIL --role operator")
