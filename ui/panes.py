"""Small panes and formatting shared by the views."""
from __future__ import annotations

import re

import panel as pn

ALERT = {"info": "light", "success": "success", "warning": "warning", "error": "danger"}
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")   # every ASCII punctuation character
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def text(value: object) -> str:
    """Any string that came from outside (the server, a model, a client of the API) as Markdown that shows exactly
    this text: never markup, HTML or a table cell break.

    The one way the views put such strings into a Markdown pane (or an Alert, which is one). Every ASCII
    punctuation character is backslash-escaped (CommonMark shows an escaped character as itself: `<`, `&`, `|`,
    `*`, `_`, `[`, `$`... never start a tag, an entity, a cell, emphasis, a link or math); line breaks and other
    control characters become a space, so a value cannot start a block of its own. Never put the result inside a
    code span (backticks), where escapes do not apply."""
    return _PUNCTUATION.sub(r"\\\1", _CONTROL.sub(" ", "" if value is None else str(value)))


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

