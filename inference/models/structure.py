"""The structural checks that make each type the loader trusts beyond skops' defaults harmless, run on every
loaded estimator before anything scores with it."""
from __future__ import annotations

from sklearn.ensemble._gb import BaseGradientBoosting
from sklearn.ensemble._hist_gradient_boosting.gradient_boosting import BaseHistGradientBoosting
from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

from inference.errors import UntrustedArtifact
from inference.models import boosting, neighbors, svm
from inference.models.reach import of_type, reachable
from inference.models.trees import check_trees

# Types skops does not trust by default, each accepted only with the check named beside it.
TRUSTED_TYPES = frozenset({
    "numpy.dtype",                                                     # plain data
    "sklearn.tree._tree.Tree",                                         # trees.check_trees
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",  # boosting.check_predictor
    "functools.partial", "sklearn.utils.validation.check_array",     # boosting.check_partials
    "sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree",  # neighbors: rebuilt
    "sklearn.metrics._dist_metrics.EuclideanDistance64",              # neighbors: discarded with the index
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.calibration._CalibratedClassifier",                      # svm.check_calibration
    "sklearn.calibration._SigmoidCalibration",
})


def check_structure(estimator) -> None:
    """Raise UntrustedArtifact unless every checked type in the estimator passes its check; rebuilds the
    nearest-neighbour indexes in place."""
    rebuilt = neighbors.rebuild_indexes(reachable(estimator))
    found = reachable(estimator)
    neighbors.check_indexes(found, rebuilt)
    check_trees(estimator)
    # An estimator without its fitted trees is a template (e.g. CalibratedClassifierCV's `estimator`, of which the
    # calibrated classifiers hold fitted clones): it cannot score, and there is nothing of it to check.
    for reached in of_type(found, BaseGradientBoosting):
        if hasattr(reached.obj, "estimators_"):
            boosting.check_gradient_boosting(reached.obj)
    claimed: set[int] = set()
    for reached in of_type(found, BaseHistGradientBoosting):
        if hasattr(reached.obj, "_predictors"):
            claimed.update(id(p) for p in boosting.check_hist_gradient_boosting(reached.obj))
    if any(id(r.obj) not in claimed for r in of_type(found, TreePredictor)):
        raise UntrustedArtifact("a TreePredictor outside a HistGradientBoosting's predictors is not accepted")
    boosting.check_partials(found)
    svm.check_libsvm(found)
    svm.check_calibration(found)
