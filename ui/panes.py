"""Small panes and formatting shared by the views."""
from __future__ import annotations

import html

import panel as pn

ALERT = {"info": "light", "success": "success", "warning": "warning", "error": "danger"}


def text(value: str) -> str:
    """Server messages are text, not markup."""
    return html.escape(value or "", quote=False)


def _notice_text(notice) -> str:
    return text(notice.text)


def _notice_kind(notice) -> str:
    return ALERT.get(notice.kind, "light")


def _notice_shown(notice) -> bool:
    return bool(notice.text)


def notice_pane(notice) -> pn.pane.Alert:
    """An alert that shows a Notice parameter (e.g. `state.param.notice`) and hides while it is empty."""
    return pn.pane.Alert(pn.bind(_notice_text, notice), alert_type=pn.bind(_notice_kind, notice),
                         visible=pn.bind(_notice_shown, notice), margin=(5, 10))


def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def num(value: float) -> str:
    """Three decimals, or a dash for NaN (no data)."""
    return f"{value:.3f}" if value == value else "–"
