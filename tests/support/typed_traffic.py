"""Traffic for the typed test model (tests/support/typed_model.py): rows of its training distribution as the plain
values a client sends (float, str, bool, None = missing), optionally with the contract share shifted or with
categories training never saw."""
from __future__ import annotations

import numpy as np

from tests.support.typed_model import FEATURES, table


def churn_rows(n: int, seed: int, shift: float = 0.0, unseen: float = 0.0) -> list[dict]:
    """n rows; `shift`: the share of the Month-to-month contracts sent as "Two year" (0.8: the contract shares
    ~45/29/25 % become ~9/29/62 %); `unseen`: the share of rows whose contract is "Three year" (never in training)."""
    df = table(n, seed)
    rng = np.random.default_rng(seed)
    rows = []
    for tenure, monthly, contract, senior in df[list(FEATURES)].itertuples(index=False):
        contract = contract if isinstance(contract, str) else None
        if contract == "Month-to-month" and rng.random() < shift:
            contract = "Two year"
        if rng.random() < unseen:
            contract = "Three year"
        rows.append({"tenure": None if tenure != tenure else float(tenure), "monthly": float(monthly),
                     "contract": contract, "senior": bool(senior)})
    return rows


def send(client, rows: list[dict], model: str = "churn", batch: int = 50) -> None:
    """Score the rows in batches through an SDK client."""
    for start in range(0, len(rows), batch):
        client.predict_batch(model, rows[start:start + batch])
