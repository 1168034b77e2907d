"""A loaded, verified model version: input validation in schema order and batched scoring.

A row, once checked, is a list in schema order of plain values: a float for a number, a str for a category, a
bool for a boolean, None for a missing value (inference/models/frame.py). "array" models take the rows as one
float64 matrix (a missing nullable number: NaN), "frame" models as a DataFrame built by frame.to_frame.
"""
from __future__ import annotations

import math
import re
import sys
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from inference.bounds import shown
from inference.errors import InvalidFeatures
from inference.models.batcher import Batcher
from inference.models.frame import to_frame
from inference.models.manifest import Feature, Manifest

_PYTHON_CHECK_ROWS = 8  # up to this many rows check_rows compares in Python
_MAX_LISTED = 10  # categories listed in the message refusing an unknown one
# A NaN where the feature may be missing: most likely a pandas gap (df.to_dict() gives NaN, not None).
_NAN_GAP = ("; a missing value is null (None in Python): NaN, pandas' gap, is not (e.g. send "
            "df.astype(object).where(df.notna(), None))")
Decode = Callable[[str, Any, str], Any]  # (feature name, value as sent, "row i: " or "") → plain value


class LoadedModel:
    """An estimator with its manifest; immutable once built, so in-flight calls can finish on it after a swap."""

    def __init__(self, manifest: Manifest, estimator, *, max_batch_rows: int = 64, max_delay_s: float = 0.0,
                 range_tolerance: float = 10.0, on_batch=None, kernel=None):
        self.manifest = manifest
        self.estimator = estimator
        # "frame": the estimator takes a DataFrame (frame.to_frame), always through scikit-learn; "array": a float64
        # matrix, through a verified native predict_proba (inference/models/kernels.py) when one is given.
        self.frame = manifest.input == "frame"
        if self.frame:
            kernel = None
            features = manifest.features
            self._proba = lambda rows: estimator.predict_proba(to_frame(rows, features))
        else:
            self._proba = kernel if kernel is not None else estimator.predict_proba
        self.runtime = "native" if kernel is not None else "sklearn"
        self.features = manifest.features
        self.names = manifest.feature_names
        self._kinds = tuple(f.kind for f in manifest.features)
        self._nullable = np.array([f.nullable for f in manifest.features], dtype=bool)
        self._categories = tuple(frozenset(f.category_names) if f.kind == "category" else frozenset()
                                 for f in manifest.features)
        # A number feature with categories is a code the estimator takes only the training values of (a number it
        # one-hot or ordinal encodes; profile.probe): {column: those values}; any other number is refused here.
        self._codes = {col: np.array(sorted(float(v) for v in f.category_names), dtype=np.float64)
                       for col, f in enumerate(manifest.features) if f.kind == "number" and f.categories}
        # Rows of finite floats only, none missing: the float fast path of check_row (array models without
        # nullable or coded features); anything else is checked value by value against each feature's kind.
        self._floats_only = not self.frame and not self._nullable.any() and not self._codes
        self._index = {name: i for i, name in enumerate(self.names)}
        # Text in another Unicode normalisation form than training's (macOS file names and some editors write "é"
        # as "e" + U+0301: the same text, other code points): {NFC form: the training's spelling} of the feature
        # names and of each category feature's categories, consulted only for a name or value not found as sent,
        # so "Région" or "Zürich" in either form is the model's, never an unknown feature or an unseen category.
        self._name_spellings = {unicodedata.normalize("NFC", name): name for name in self.names}
        self._spellings = tuple({unicodedata.normalize("NFC", c): c for c in f.category_names}
                                if f.kind == "category" else {} for f in manifest.features)
        # Plausible range per feature (PREDMESH_RANGE_TOLERANCE): the training range [min, max] widened on each
        # side by range_tolerance training spans (max - min; 1 for a feature constant in training); 0 = no check.
        if not (math.isfinite(range_tolerance) and range_tolerance >= 0):
            raise ValueError(f"range_tolerance={range_tolerance!r} must be a finite number >= 0")
        self._bounds = []
        for f in manifest.features:
            span = (f.max - f.min) or 1.0
            self._bounds.append((f.min - range_tolerance * span, f.max + range_tolerance * span))
        self._check_range = range_tolerance > 0
        # What a single value must lie within: the plausible range, or (range check off) any finite float.
        self._limits = self._bounds if self._check_range else [(-sys.float_info.max, sys.float_info.max)] * len(
            self._bounds)
        self._lo = np.array([b[0] for b in self._bounds], dtype=np.float64)
        self._hi = np.array([b[1] for b in self._bounds], dtype=np.float64)
        self.classes = manifest.classes
        self.drift = None  # a DriftTracker once track_drift() is called
        self._observe = None
        self.batcher = Batcher(self._predict_proba, max_rows=max_batch_rows, max_delay_s=max_delay_s,
                               on_batch=on_batch, dtype=object if self.frame else np.float64)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def _predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        probabilities = self._proba(matrix)
        if self._observe is not None:  # drift tracking: one deque append per batch (inference/models/drift.py)
            self._observe((matrix, probabilities))
        return probabilities

    def track_drift(self, tracker) -> None:
        """Start handing every scored batch to a DriftTracker (after the smoke test: golden rows are no traffic)."""
        self.drift = tracker
        self._observe = tracker.observe

    # -- rows in columns (the matrix path) -----------------------------------------------------------------------
    def check_matrix(self, matrix: np.ndarray) -> None:
        """Rows already in schema order (n × features): float64 for an array model (finite and within the plausible
        range; NaN where a feature is nullable), or an object matrix of plain values (check_row's rules); else
        InvalidFeatures naming the first offending row and feature."""
        if matrix.ndim != 2 or matrix.shape[1] != len(self.names):
            raise InvalidFeatures(f"expected shape [N, {len(self.names)}] ({', '.join(self.names)}), "
                                  f"got {list(matrix.shape)}")
        if matrix.dtype == object:
            refused = self.refused_rows(matrix)
            if refused:
                row = min(refused)
                raise InvalidFeatures(f"row {row}: {refused[row]}" if len(matrix) > 1 else refused[row])
            return
        if self._check_range:  # NaN and ±inf fail the (finite) bounds too: one pass on the fast path
            if not self._codes and ((matrix >= self._lo) & (matrix <= self._hi)).all():
                return
            with np.errstate(invalid="ignore"):
                bad = ~((matrix >= self._lo) & (matrix <= self._hi))
        else:
            bad = ~np.isfinite(matrix)
        for col, codes in self._codes.items():
            bad[:, col] |= ~np.isin(matrix[:, col], codes)
        if self._nullable.any():
            bad &= ~(np.isnan(matrix) & self._nullable)
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise self._bad_value(col, float(matrix[row, col]), f"row {row}: " if len(matrix) > 1 else "")

    def refused_rows(self, matrix: np.ndarray) -> dict[int, str]:
        """Rows in schema order (n × features, shape already checked) that check_matrix would refuse: {row index:
        the message that row alone is refused with}. For a float64 matrix one vectorised pass, with Python work only
        for refused rows; an object matrix is checked value by value."""
        if matrix.dtype == object:
            refused = {}
            for row, values in enumerate(matrix.tolist()):
                try:
                    self.check_row(values)
                except InvalidFeatures as exc:
                    refused[row] = str(exc)
            return refused
        # As check_matrix: with the range check on, NaN and ±inf fail the (finite) bounds too.
        ok = (matrix >= self._lo) & (matrix <= self._hi) if self._check_range else np.isfinite(matrix)
        for col, codes in self._codes.items():
            ok[:, col] &= np.isin(matrix[:, col], codes)
        if self._nullable.any():
            ok |= np.isnan(matrix) & self._nullable
        if ok.all():
            return {}
        refused = {}
        for row in np.flatnonzero(~ok.all(axis=1)).tolist():
            col = int(np.argmin(ok[row]))  # the first offending feature, as check_matrix names it
            refused[row] = str(self._bad_value(col, float(matrix[row, col]), ""))
        return refused

    def columns(self, values: np.ndarray, names: Sequence[str], strings: Mapping[str, Sequence[str | None]],
                *, partial: bool = False) -> tuple[np.ndarray, dict[int, str]]:
        """Rows given in columns (the matrix path) → (the matrix in schema order that score takes, {row: message}
        of the refused rows). values: n × len(names) float64, the number and boolean features (a boolean 0 or 1,
        NaN = missing); strings: each category feature's column (None = missing). names and strings together
        must name every feature once (the caller checked). Without partial the first refused row raises
        InvalidFeatures (naming the row when n > 1)."""
        n = len(values)
        position = {name: i for i, name in enumerate(names)}
        for name in names:
            if self._kinds[self._index[name]] == "category":
                raise InvalidFeatures(f"matrix.feature_names: feature {name!r} is categorical: send its values as "
                                      "strings in matrix.string_columns")
        for name in strings:
            kind = self._kinds[self._index[name]]
            if kind != "category":
                raise InvalidFeatures(f"matrix.string_columns: feature {name!r} is a {kind}; send it in "
                                      "matrix.feature_names and matrix.values")
        if not self.frame:  # every feature a number, none in strings: the float64 fast path
            matrix = values if tuple(names) == self.names else values[:, [position[f] for f in self.names]]
            if partial:
                return matrix, self.refused_rows(matrix)
            self.check_matrix(matrix)
            return matrix, {}
        matrix = np.empty((n, len(self.names)), dtype=object)
        bad = np.zeros((n, len(self.names)), dtype=bool)
        for col, f in enumerate(self.features):
            if f.name in strings:
                column = list(strings[f.name])
                if self._spellings[col]:
                    known = self._categories[col]
                    column = [v if v is None or v in known else self._spelled(col, v) for v in column]
                matrix[:, col] = column
                bad[:, col] = [not self._category_ok(col, v) for v in column]
                continue
            x = values[:, position[f.name]]
            missing = np.isnan(x)
            if f.kind == "boolean":
                ok = (x == 0) | (x == 1)
                out = np.where(x == 1, True, False).astype(object)
            else:
                lo, hi = self._limits[col]
                with np.errstate(invalid="ignore"):
                    ok = (x >= lo) & (x <= hi)
                if col in self._codes:
                    ok &= np.isin(x, self._codes[col])
                out = x.astype(object)
            if f.nullable:
                ok |= missing
            if missing.any():
                out[missing] = None
            if f.kind == "boolean" and not ok.all():  # keep what was sent, for the message
                out[~ok] = x[~ok]
            matrix[:, col] = out
            bad[:, col] = ~ok
        refused: dict[int, str] = {}
        if bad.any():
            for row in np.flatnonzero(bad.any(axis=1)).tolist():
                col = int(np.argmax(bad[row]))
                refused[row] = self._refusal(col, matrix[row, col], matrix=True)
                if not partial:
                    raise InvalidFeatures(f"row {row}: {refused[row]}" if n > 1 else refused[row])
        return matrix, refused

    def _spelled(self, col: int, value: str) -> str:
        """A category value not among feature col's categories as training spelled it, when it is one of them in
        another Unicode normalisation form; else the value as sent."""
        if value.isascii():
            return value
        return self._spellings[col].get(unicodedata.normalize("NFC", value), value)

    def spelled_name(self, name: str) -> str:
        """A feature name as the model spells it, when it is one of its features in another Unicode normalisation
        form; else the name as sent."""
        if name in self._index or name.isascii():
            return name
        return self._name_spellings.get(unicodedata.normalize("NFC", name), name)

    def _category_ok(self, col: int, value: object) -> bool:
        if value is None:
            return bool(self._nullable[col])
        return type(value) is str and (value in self._categories[col] or self.features[col].accepts_unknown) \
            and storable(value)

    # -- rows of named values --------------------------------------------------------------------------------------
    def check_rows(self, rows: Sequence[Sequence[float]]) -> None:
        """check_matrix for rows given as lists of floats in schema order (each of the schema's length): plain
        comparisons for a few rows (cheaper than numpy's per-call overhead), check_matrix for many. Rows of a
        frame model (plain values) are checked value by value (check_row)."""
        if not self._floats_only:
            for i, row in enumerate(rows):
                self.check_row(list(row), f"row {i}: " if len(rows) > 1 else "")
            return
        if len(rows) > _PYTHON_CHECK_ROWS:
            self.check_matrix(np.asarray(rows, dtype=np.float64))
            return
        for i, row in enumerate(rows):
            for col, (value, (lo, hi)) in enumerate(zip(row, self._limits)):
                if not lo <= value <= hi:  # NaN fails every comparison
                    raise self._bad_value(col, value, f"row {i}: " if len(rows) > 1 else "")

    def check_row(self, values: list, where: str = "") -> list:
        """One row of plain values in schema order (of the schema's length), checked against each feature's kind,
        nullability, categories and plausible range (section 4 of the typed-features design); returns the row with
        ints as floats. Raises InvalidFeatures naming the feature (where: e.g. "row 3: ")."""
        if self._floats_only:  # the array fast path: finite floats within range, nothing else to look at
            for value, (lo, hi) in zip(values, self._limits):
                if type(value) is not float or not lo <= value <= hi:  # NaN fails every comparison
                    break
            else:
                return values
        return [self._checked(col, value, where) for col, value in enumerate(values)]

    def _checked(self, col: int, value: object, where: str) -> object:
        """One value of feature col, normalised (an int → float), or InvalidFeatures."""
        kind = self._kinds[col]
        if kind == "number":
            if type(value) is float or (isinstance(value, (int, float, np.number)) and not isinstance(
                    value, (bool, np.bool_))):
                number = float(value)
                lo, hi = self._limits[col]
                if lo <= number <= hi and (col not in self._codes or number in self._codes[col]):
                    return number
                raise self._bad_value(col, number, where)
        elif kind == "category":
            if type(value) is str:
                if value not in self._categories[col]:
                    value = self._spelled(col, value)
                if (value in self._categories[col] or self.features[col].accepts_unknown) and storable(value):
                    return value
        elif type(value) is bool:
            return value
        if value is None and self._nullable[col]:
            return None
        raise InvalidFeatures(where + self._refusal(col, value))

    def _refusal(self, col: int, value: object, matrix: bool = False) -> str:
        """Why value cannot be feature col's (value already known to be refused; matrix: it came in columns)."""
        f: Feature = self.features[col]
        name = repr(f.name)
        if value is None or (matrix and isinstance(value, float) and math.isnan(value)):
            send = {"number": "send a number", "category": f"send one of its categories as a string{self._e_g(f)}",
                    "boolean": "it is a boolean; send true or false"}[f.kind]
            return f"feature {name} is missing (null) and this model cannot impute it; {send}"
        if f.kind == "number":
            if isinstance(value, (float, int, np.number)) and not isinstance(value, (bool, np.bool_)):
                return str(self._bad_value(col, float(value), ""))
            return f"feature {name} is a number; got {_sent(value)}"
        if f.kind == "category":
            if isinstance(value, str) and not storable(value):
                bad = _UNSTORABLE.search(value).group()  # type: ignore[union-attr]
                return (f"feature {name} contains the character U+{ord(bad):04X}, which a stored prediction cannot "
                        "hold; send the category without it")
            if isinstance(value, str):
                listed = ", ".join(shown(c) for c in f.category_names[:_MAX_LISTED])
                more = ", …" if len(f.category_names) > _MAX_LISTED else ""
                return f"feature {name} has no category {shown(value)}; expected one of {listed}{more}"
            return (f"feature {name} is categorical: send one of its categories as a string{self._e_g(f)}; "
                    f"got {_sent(value)}{self._nan_gap(col, value)}")
        return (f"feature {name} is a boolean; send true or false" + (" (1 or 0 in matrix.values)" if matrix else "")
                + self._nan_gap(col, value))

    def _nan_gap(self, col: int, value: object) -> str:
        """The hint for a NaN sent where a missing value is accepted: pandas' marker of a gap is not null."""
        nan = isinstance(value, (float, np.floating)) and math.isnan(value)
        return _NAN_GAP if nan and self._nullable[col] else ""

    @staticmethod
    def _e_g(f: Feature) -> str:
        return f" (e.g. {shown(f.category_names[0])})" if f.category_names else ""

    def _bad_value(self, col: int, value: float, where: str) -> InvalidFeatures:
        if not math.isfinite(value):
            gap = _NAN_GAP if math.isnan(value) and self._nullable[col] else ""
            return InvalidFeatures(f"{where}feature {self.names[col]!r} is {value}; send a finite number{gap}")
        if col in self._codes and value not in self._codes[col]:
            codes = sorted(self.features[col].category_names, key=float)
            listed = ", ".join(codes[:_MAX_LISTED]) + (", …" if len(codes) > _MAX_LISTED else "")
            return InvalidFeatures(f"{where}feature {self.names[col]!r} takes only the values the model was fitted "
                                   f"on ({listed}); got {value:g}")
        lo, hi = self._bounds[col]
        return InvalidFeatures(f"{where}feature {self.names[col]!r}={value:g} is outside the plausible range "
                               f"[{lo:g}, {hi:g}] for this model")

    def vector(self, features: Mapping[str, Any], row: int | None = None, decode: Decode | None = None) -> list:
        """Features by name → checked plain values in schema order (check_row); raises InvalidFeatures naming the
        offending field. decode(name, value, where) turns each value as sent into a plain value first (the
        servicer's google.protobuf.Value → float | str | bool | None)."""
        where = "" if row is None else f"row {row}: "
        if len(features) != len(self.names) or any(k not in self._index for k in features):
            features = self._spelled_names(features, where)
            if len(features) != len(self.names) or any(k not in self._index for k in features):
                extra = sorted(k for k in features if k not in self._index)
                if extra:
                    raise InvalidFeatures(f"{where}unknown feature {shown(extra[0])}; expected "
                                          f"{', '.join(self.names)}")
                missing = [n for n in self.names if n not in features]
                raise InvalidFeatures(f"{where}feature {missing[0]!r} is missing; expected {', '.join(self.names)}")
        if decode is None:
            return self.check_row([features[n] for n in self.names], where)
        return self.check_row([decode(n, features[n], where) for n in self.names], where)

    def _spelled_names(self, features: Mapping[str, Any], where: str) -> Mapping[str, Any]:
        """features keyed by the model's spelling of each name (spelled_name); InvalidFeatures when two names are
        one feature in two Unicode normalisation forms."""
        spelled: dict[str, Any] = {}
        for k, v in features.items():
            name = self.spelled_name(k)
            if name in spelled:
                raise InvalidFeatures(f"{where}feature {shown(name)} is sent twice (in two Unicode normalisation "
                                      "forms)")
            spelled[name] = v
        return spelled

    def score(self, rows: Sequence[Sequence[Any]] | np.ndarray, timeout: float | None = None, finish=None,
              commit=None):
        """Class probabilities for checked rows (lists of plain values in schema order, or a matrix as columns()
        gives), through the batcher (finish/commit: see Batcher.score), which builds one matrix per batch (float64
        for an array model, object for a frame model)."""
        return self.batcher.score(rows, timeout, finish, commit)

    def label_of(self, probabilities: np.ndarray) -> str:
        return self.classes[int(probabilities.argmax())]


# What PostgreSQL cannot store in a jsonb (or text) value: NUL (U+0000), and a lone surrogate (no UTF-8 at all)
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def storable(value: str) -> bool:
    """Whether a category string can be stored as it is (the prediction log keeps every answered row: a value the
    database refuses is refused at the edge instead, naming the feature)."""
    return "\x00" not in value and (value.isascii() or _UNSTORABLE.search(value) is None)


def _sent(value: object) -> str:
    """A refused value as a message shows it: true/false, the string '…', or the number."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"the string {shown(value)}"
    if isinstance(value, (float, int, np.number)):
        return f"{float(value):g}"
    return type(value).__name__
