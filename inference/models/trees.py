"""Structural checks of scikit-learn decision trees loaded from an artifact, before any of them is used.

skops does not trust `sklearn.tree._tree.Tree` by default because its compiled code follows node indices
without bounds checks: a crafted artifact (with a valid hash) whose child index or feature index is out of range
crashes the process on the first prediction. The loader trusts the type only together with these checks: every
tree of the estimator (found wherever it sits: a forest's estimators_, a pipeline's steps) must be a well-formed
binary tree over the estimator's features and classes, with finite numbers.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.tree._tree import Tree

from inference.errors import UntrustedArtifact

TREE_LEAF = -1
_MAX_WALK = 10_000  # objects visited while looking for trees (an artifact cannot make the search unbounded)


def find_trees(estimator) -> list[tuple[Tree, object]]:
    """Every Tree reachable from the estimator, with the estimator that owns it."""
    found: list[tuple[Tree, object]] = []
    seen: set[int] = set()
    stack: list[tuple[object, object]] = [(estimator, estimator)]
    while stack:
        if len(seen) > _MAX_WALK:
            raise UntrustedArtifact("the estimator nests too many objects to check")
        obj, owner = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Tree):
            found.append((obj, owner))
        elif isinstance(obj, BaseEstimator):
            stack.extend(reversed([(v, obj) for v in vars(obj).values()]))
        elif isinstance(obj, (list, tuple)):
            stack.extend(reversed([(v, owner) for v in obj]))
        elif isinstance(obj, dict):
            stack.extend(reversed([(v, owner) for v in obj.values()]))
        elif isinstance(obj, np.ndarray) and obj.dtype == object:
            stack.extend(reversed([(v, owner) for v in obj.ravel()]))
    return found


def check_tree(tree: Tree, n_features: int | None, n_classes: int | None, where: str = "tree") -> None:
    """Raise UntrustedArtifact unless the tree is a well-formed binary tree: children of internal nodes in range
    and after their parent (so the tree is acyclic and every walk ends at a leaf), leaves with no children,
    split features within [0, n_features), finite thresholds and values, and shapes matching the estimator."""
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
    if not np.isfinite(value).all() or (value < 0).any():
        raise UntrustedArtifact(f"{where} has non-finite or negative leaf values")
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
    """check_tree for every tree of the estimator against its owner's features and classes; returns how many."""
    trees = find_trees(estimator)
    for i, (tree, owner) in enumerate(trees):
        n_features = getattr(owner, "n_features_in_", None)
        n_classes = getattr(owner, "n_classes_", None)
        n_classes = int(n_classes) if isinstance(n_classes, (int, np.integer)) else None
        check_tree(tree, int(n_features) if n_features is not None else None, n_classes,
                   f"tree {i} of {type(owner).__name__}")
    return len(trees)
