"""Staff accounts of the sync log page."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from hub.models.base import Base, now_utc

ROLES = ("viewer", "operator")


class StaffUser(Base):
    __tablename__ = "staff_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20), default="viewer")
    created_at: Mapped[datetime] = mapped_column(default=now_utc)
    # Copied into the session cookie at login; a session whose copy differs has ended.
    # Logout and a new password move it on, which ends every session of this user at once
    # (the cookie is signed, not stored: without this a copied cookie outlives logout).
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")

    # What Flask-Login asks of a user object (hub.web.auth), without importing it here.
    is_active = True
    is_authenticated = True
    is_anonymous = False

    def get_id(self) -> str:
        """The login id kept in the session cookie: the id and the session generation, so a
        cookie from before end_sessions() loads no one (Flask-Login's alternative id)."""
        return f"{self.id}:{self.session_generation}"

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)
        self.end_sessions()

    def end_sessions(self) -> None:
        """Log this user out everywhere."""
        self.session_generation = (self.session_generation or 0) + 1

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def can_operate(self) -> bool:
        return self.role == "operator"
