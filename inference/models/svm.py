"""Support vector classifiers and probability calibration loaded from an artifact, checked before any use.

libsvm's predict builds its model from the stored arrays (support vectors, per-class support counts, dual
coefficients, intercepts, Platt parameters) and reads them by the counts without bounds checks: a crafted SVC
whose counts exceed its arrays reads past them. Every SVC/NuSVC must be dense, with a built-in kernel and arrays
of the sizes its classes imply. CalibratedClassifierCV(SVC(), ensemble=False) stores a _CalibratedClassifier with
_SigmoidCalibration objects (not trusted by skops by default): plain numbers, checked to be finite.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.calibration import _CalibratedClassifier, _SigmoidCalibration
from sklearn.isotonic import IsotonicRegression
from sklearn.svm import SVC, NuSVC
from sklearn.svm._base import BaseLibSVM

from inference.errors import UntrustedArtifact
from inference.models.reach import Reached, of_type

KERNELS = frozenset({"linear", "poly", "rbf", "sigmoid"})


def check_libsvm(found: list[Reached]) -> None:
    """Every libsvm estimator is a dense SVC/NuSVC whose arrays have the sizes its classes imply."""
    for reached in of_type(found, BaseLibSVM):
        est = reached.obj
        if hasattr(est, "support_vectors_"):  # fitted
            _check_svc(est, type(est).__name__)


def _array(value, ndim: int, kinds: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.ndim != ndim or value.dtype.kind not in kinds:
        raise ValueError
    return value


def _check_svc(est: BaseLibSVM, name: str) -> None:
    if type(est) not in (SVC, NuSVC):
        raise UntrustedArtifact(f"{name} is not supported (SVC and NuSVC are)")
    if est._sparse or est.kernel not in KERNELS:
        raise UntrustedArtifact(f"{name}: only dense models with a built-in kernel ({', '.join(sorted(KERNELS))})")
    try:
        vectors = _array(est.support_vectors_, 2, "f")
        n_sv = vectors.shape[0]
        n_class = len(est.classes_)
        pairs = n_class * (n_class - 1) // 2
        counts = _array(est._n_support, 1, "iu")
        dual = _array(est._dual_coef_, 2, "f")
        intercept = _array(est._intercept_, 1, "f")
        support = _array(est.support_, 1, "iu")
        prob_a, prob_b = _array(est._probA, 1, "f"), _array(est._probB, 1, "f")
        gamma, coef0 = float(est._gamma), float(est.coef0)
    except (ValueError, TypeError, AttributeError):
        raise UntrustedArtifact(f"{name}: its fitted arrays are missing or of the wrong type") from None
    fit_rows = int(est.shape_fit_[0])
    if (n_class < 2 or vectors.shape[1] != int(est.n_features_in_) or counts.shape != (n_class,)
            or (counts < 0).any() or int(counts.sum()) != n_sv or dual.shape != (n_class - 1, n_sv)
            or intercept.shape != (pairs,) or support.shape != (n_sv,) or ((support < 0) | (support >= fit_rows)).any()
            or prob_a.shape != prob_b.shape or prob_a.shape not in ((0,), (pairs,))
            or tuple(est.shape_fit_[1:]) != (int(est.n_features_in_),) or int(est.degree) < 0):
        raise UntrustedArtifact(f"{name}: support vectors, counts and coefficients do not agree with "
                                f"{n_class} classes")
    numbers = np.concatenate([vectors.ravel(), dual.ravel(), intercept, prob_a, prob_b, [gamma, coef0]])
    if not np.isfinite(numbers).all():
        raise UntrustedArtifact(f"{name} has non-finite coefficients")


def check_calibration(found: list[Reached]) -> None:
    """_CalibratedClassifier: one finite calibrator per class (one for two classes); sigmoids finite."""
    for reached in of_type(found, _SigmoidCalibration):
        a, b = getattr(reached.obj, "a_", None), getattr(reached.obj, "b_", None)
        if not all(isinstance(v, (float, np.floating)) and np.isfinite(v) for v in (a, b)):
            raise UntrustedArtifact("a sigmoid calibration's a_ and b_ are not finite numbers")
    for reached in of_type(found, _CalibratedClassifier):
        cal: Any = reached.obj
        n_classes = len(np.asarray(cal.classes))
        expected = 1 if n_classes == 2 else n_classes
        if (cal.method not in ("sigmoid", "isotonic") or not isinstance(cal.calibrators, list)
                or len(cal.calibrators) != expected
                or not all(type(c) in (_SigmoidCalibration, IsotonicRegression) for c in cal.calibrators)):
            raise UntrustedArtifact(f"a calibrated classifier does not hold {expected} calibrators")
