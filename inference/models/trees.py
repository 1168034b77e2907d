"""Structural checks of scikit-learn decision trees loaded from an artifact, before any of them is used.

skops does not trust `sklearn.tree._tree.Tree` by default because its compiled code follows node indices
without bounds checks: a crafted artifact (with a valid hash) whose child index or feature index is out of range
crashes the process on the first prediction. The loader trusts the type only together with these checks: every
tree of the estimator (found wherever it sits: a forest's or a GradientBoosting's estimators_, a pipeline's steps,
a calibrated classifier) must be a well-formed binary tree over the estimator's features and classes, with finite
numbers: class counts (never negative) in a classifier's tree, any finite value in a regression tree.
"""
from __future__ import annotations

import numpy as np
from sklearn.calibration import CalibratedClassifierCV, _CalibratedClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import BaseDecisionTree, DecisionTreeRegressor
from sklearn.tree._tree import Tree

from inference.errors import UntrustedArtifact
from inference.models.reach import of_type, reachable

TREE_LEAF = -1
# holders that pass rows to the tree estimator through its own checked predict (the others are ensembles)
_VALIDATING_HOLDERS = (Pipeline, CalibratedClassifierCV, _CalibratedClassifier)


def find_trees(estimator) -> list[tuple[Tree, object]]:
    """Every Tree reachable from the estimator, with the object that holds it."""
    return [(r.obj, r.holder) for r in of_type(reachable(estimator), Tree)]


def check_tree(tree: Tree, n_features: int | None, n_classes: int | None, where: str = "tree",
               regression: bool = False) -> None:
    """Raise UntrustedArtifact unless the tree is a well-formed binary tree: children of internal nodes in range
    and after their parent (so the tree is acyclic and every walk ends at a leaf), leaves with no children,
    split features within [0, n_features), finite thresholds and values, and shapes matching the estimator.
    Leaf values are class counts (never negative) in a classifier's tree; a regression tree (regression=True:
    one value per node, value shape [n, 1, 1], as in GradientBoosting's stages) may hold any finite value."""
    n = int(tree.node_count)
    if n < 1:
        raise UntrustedArtifact(f"{where} has {n} nodes")
    left = np.asarray(tree.children_left)
    right = np.asarray(tree.children_right)
    feature = np.asarray(tree.feature)
    threshold = np.asarray(tree.threshold)
    value = np.asarray(tree.value)
    if not (len(left) == len(right) == len(feature) == len(threshold) == n):
        raise UntrustedArtifact(f"{where}: node arrays do not have node_count={n} entries")
    if n_features is not None and int(tree.n_features) != n_features:
        raise UntrustedArtifact(f"{where} is built for {tree.n_features} features, the estimator for {n_features}")
    if int(tree.n_outputs) != 1:
        raise UntrustedArtifact(f"{where} has {tree.n_outputs} outputs; one is supported")
    classes = np.asarray(tree.n_classes)
    if n_classes is not None and (classes.shape != (1,) or int(classes[0]) != n_classes):
        raise UntrustedArtifact(f"{where} is built for {classes.tolist()} classes, the estimator has {n_classes}")
    if value.ndim != 3 or value.shape[0] != n or value.shape[1] != 1 or value.shape[2] != int(tree.max_n_classes):
        raise UntrustedArtifact(f"{where}: value array of shape {list(value.shape)} does not fit the tree")
    if regression and value.shape[2] != 1:
        raise UntrustedArtifact(f"{where}: a regression tree's value array has shape {list(value.shape)}")
    if not np.isfinite(value).all():
        raise UntrustedArtifact(f"{where} has non-finite leaf values")
    if not regression and (value < 0).any():
        raise UntrustedArtifact(f"{where} has negative leaf values (class counts)")
    leaf = left == TREE_LEAF
    if not np.array_equal(leaf, right == TREE_LEAF):
        raise UntrustedArtifact(f"{where} has a node with exactly one child")
    nodes = np.arange(n)
    internal = ~leaf
    for name, child in (("left", left), ("right", right)):
        c = child[internal]
        if ((c <= nodes[internal]) | (c >= n)).any():
            raise UntrustedArtifact(f"{where} has a {name} child index out of range or not after its parent")
    if internal.any():
        f = feature[internal]
        limit = n_features if n_features is not None else int(tree.n_features)
        if ((f < 0) | (f >= limit)).any():
            raise UntrustedArtifact(f"{where} splits on a feature index outside [0, {limit})")
        if not np.isfinite(threshold[internal]).all():
            raise UntrustedArtifact(f"{where} has a non-finite split threshold")
    # every node but the root has exactly one parent (no node shared between branches), and the depth is what
    # the tree claims (the native kernel walks max_depth levels)
    parents = np.zeros(n, dtype=np.int64)
    np.add.at(parents, left[internal], 1)
    np.add.at(parents, right[internal], 1)
    if parents[0] != 0 or (parents[1:] != 1).any():
        raise UntrustedArtifact(f"{where}: nodes are not a single tree rooted at node 0")
    depth = np.zeros(n, dtype=np.int64)
    for i in np.flatnonzero(internal):  # parents come before children: one pass in index order
        depth[left[i]] = depth[right[i]] = depth[i] + 1
    if int(tree.max_depth) != int(depth.max()):
        raise UntrustedArtifact(f"{where} claims depth {tree.max_depth}, its nodes have depth {int(depth.max())}")


def check_trees(estimator) -> int:
    """check_tree for every tree of the estimator; returns how many.

    A tree must be the tree_ of a DecisionTree (or ExtraTree) classifier or regressor, checked against that
    estimator's features and classes. When that estimator is itself held by an ensemble (a forest's or a
    GradientBoosting's estimators_), the ensemble hands it rows checked against the ensemble's own feature count
    and no check of its own: the tree must then be built for exactly that many features."""
    found = reachable(estimator)
    holders = {id(r.obj): r.holder for r in found}
    trees = of_type(found, Tree)
    for i, reached in enumerate(trees):
        tree, owner = reached.obj, reached.holder
        where = f"tree {i} of {type(owner).__name__}"
        if not isinstance(owner, BaseDecisionTree) or getattr(owner, "tree_", None) is not tree:
            raise UntrustedArtifact(f"{where}: a decision tree is accepted only as a DecisionTree's tree_")
        n_features = _count(owner, "n_features_in_")
        ensemble = holders.get(id(owner))
        if ensemble is not None and not isinstance(ensemble, _VALIDATING_HOLDERS):
            outer = _count(ensemble, "n_features_in_")
            if outer is None or outer != n_features:
                raise UntrustedArtifact(f"{where} is built for {n_features} features inside a "
                                        f"{type(ensemble).__name__} of {outer}")
        check_tree(tree, n_features, _count(owner, "n_classes_"), where,
                   regression=isinstance(owner, DecisionTreeRegressor))
    return len(trees)


def _count(obj, name: str) -> int | None:
    value = getattr(obj, name, None)
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else None
