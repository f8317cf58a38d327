"""Who may write verdicts: an OIDC login (Streamlit's ``st.login``) when ``[auth]`` is
configured in ``.streamlit/secrets.toml``; otherwise a shared review password
(``GEOAUDIT_REVIEW_PASSWORD``) plus the reviewer's name; otherwise read-only.
Never an anonymous write."""

from __future__ import annotations

import hmac

import streamlit as st

from dashboard import data


def oidc_configured() -> bool:
    """True when ``st.secrets`` holds an ``[auth]`` section (OIDC provider settings)."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all, or an unreadable one
        return False


def reviewer() -> str | None:
    """The identity of the person allowed to write verdicts now, or None (read-only).

    Draws the login controls in the sidebar when nobody is identified yet.
    """
    box = st.sidebar.container(border=True)
    if oidc_configured():
        if st.user.is_logged_in:
            who = str(st.user.get("email") or st.user.get("name") or st.user.get("sub"))
            box.caption(f"Reviewing as **{who}**")
            box.button("Log out", on_click=st.logout, key="logout")
            return who
        box.caption("Log in to give verdicts.")
        box.button("Log in", on_click=st.login, key="login")
        return None
    secret = data.settings().review_password
    if secret is None:
        box.caption(
            "Read-only: reviews need an OIDC login (`[auth]` in `.streamlit/secrets.toml`) "
            "or a shared password (`GEOAUDIT_REVIEW_PASSWORD`)."
        )
        return None
    who = st.session_state.get("reviewer")
    if who:
        box.caption(f"Reviewing as **{who}**")
        if box.button("Stop reviewing", key="logout"):
            del st.session_state["reviewer"]
            st.rerun()
        return str(who)
    with box.form("reviewer_login"):
        st.caption("Identify yourself to give verdicts.")
        name = st.text_input("Your name", key="reviewer_name")
        password = st.text_input("Review password", type="password", key="reviewer_password")
        if st.form_submit_button("Start reviewing"):
            if not name.strip():
                st.error("Enter your name: every verdict records who gave it.")
            elif hmac.compare_digest(password.encode(), secret.get_secret_value().encode()):
                st.session_state["reviewer"] = name.strip()
                st.rerun()
            else:
                st.error("Wrong review password.")
    return None
