"""The inner loop in kernel space: every Optuna trial of a study reuses one kernel per inner split.

For each inner split of an outer-training part, the data-dependent preprocessing is fitted on the inner-
training rows only (covariate residualisation, then scaling; PCA where the model has it) and the split is
reduced to its kernel: the Gram matrix ``Z_a Z_a'`` of the training rows and ``Z_b Z_a'`` of the test rows.
A trial then only transforms that kernel (``exp(-gamma D)`` for RBF, a truncation of the PCA eigenbasis) and
calls libsvm on it, so its cost no longer depends on the number of features. This is exactly what refitting
the Pipeline ``residualise -> scale -> [PCA] -> SVC`` per trial computes, up to floating-point rounding of
the kernel (tests/test_nested_cv.py compares both on every kernel, with and without PCA).

Two things are written by hand because no kept library offers them:

- the residualiser's design matrix per split from integer-coded covariates (the same columns, levels and
  ``lstsq`` solve as :class:`~src.models.residualize.CovariateResidualizer`, without building it from
  strings for every split);
- the call into scikit-learn's bundled libsvm on an already validated, C-contiguous precomputed kernel.
  ``SVC(kernel="precomputed").fit`` gives the same solution but spends ~10x the solver's time validating
  inputs and targets on every one of the ~1500 fits of a permutation. If that private binding is missing
  (another scikit-learn), the public ``SVC(kernel="precomputed")`` is used instead, with the same results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from src.models.pipeline import is_regressor
from src.models.residualize import column_means

try:  # scikit-learn's own libsvm binding (private; the public SVC is the fallback)
    from sklearn.svm import _libsvm
except ImportError:  # pragma: no cover - depends on the scikit-learn build
    _libsvm = None

# Columns per block of the per-split preprocessing (residualise, scale, accumulate the kernels): each block's
# float64 temporaries are ~16 MB whatever the number of features. Whole-matrix temporaries of a 2 mm voxel
# table (181 k columns) were ~130 MB each with several alive at once; a region table is one block, computed
# exactly as before.
_BLOCK_BYTES = 2**24

SVC_DEFAULTS = {"C": 1.0, "kernel": "rbf", "gamma": "scale", "degree": 3, "coef0": 0.0, "tol": 1e-3}


class CovariateCodes:
    """The covariates of one outer-training part coded once as numbers (categories as sorted integer codes),
    so that each inner split's design matrix is a few numpy operations.

    The design of a split is ``[1, numeric covariates, one-hot(categorical) for every training level but
    the first]``, covariates in their configured order, levels sorted as strings: the columns and values of
    :meth:`CovariateResidualizer._design`. A level absent from the split's training rows gets all-zero
    columns (the reference level's coefficients), as there.
    """

    def __init__(self, X: pd.DataFrame, covariates: Sequence[str], categorical: Sequence[str]) -> None:
        self.covariates, self.categorical = tuple(covariates), tuple(categorical)
        self.blocks: list[tuple[bool, np.ndarray]] = []
        self.level_names: dict[str, np.ndarray] = {}
        for name in covariates:
            if name in categorical:
                levels, codes = np.unique(X[name].astype(str).to_numpy(), return_inverse=True)
                self.blocks.append((True, codes.astype(np.intp)))
                self.level_names[name] = levels
            else:
                self.blocks.append((False, X[name].to_numpy(dtype=float)))

    def training_levels(self, train: np.ndarray) -> dict[str, list[str]]:
        """Each categorical covariate's levels in the ``train`` rows, as ``CovariateResidualizer.levels_``."""
        out = {}
        for name, (categorical, values) in zip(self.covariates, self.blocks, strict=True):
            if categorical:
                out[name] = [str(level) for level in self.level_names[name][np.unique(values[train])]]
        return out

    def design(self, train: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Design matrix of ``rows`` with the levels seen in the ``train`` rows."""
        columns = [np.ones(len(rows))]
        for categorical, values in self.blocks:
            if categorical:
                for level in np.unique(values[train])[1:]:
                    columns.append((values[rows] == level).astype(float))
            else:
                columns.append(values[rows])
        return np.column_stack(columns)


@dataclass
class SplitKernel:
    """One inner split reduced to kernels of its preprocessed rows (see the module docstring).

    Attributes
    ----------
    y : ndarray of float
        Training labels (0/1) as libsvm takes them, or the training rows' continuous outcome.
    gram, cross : ndarray
        ``Z_a Z_a'`` (train x train) and ``Z_b Z_a'`` (test x train) after residualisation and scaling.
    scores, test_scores : ndarray or None
        With PCA: the training rows' PCA scores (``U sqrt(lambda)`` from the eigendecomposition of the
        centred Gram, components by decreasing variance) and the test rows' (``K_ba U / sqrt(lambda)``).
    cumulative_ratio : ndarray or None
        Cumulative explained-variance ratio of the components, as ``PCA.explained_variance_ratio_``.
    """

    y: np.ndarray
    gram: np.ndarray
    cross: np.ndarray
    test_norms: np.ndarray
    n_features: int
    sum_train: float
    scores: np.ndarray | None = None
    test_scores: np.ndarray | None = None
    cumulative_ratio: np.ndarray | None = None
    transform: dict[str, Any] | None = None  # with keep_transform: what maps weights back to features

    @classmethod
    def build(
        cls,
        features: np.ndarray,
        codes: CovariateCodes | None,
        y: np.ndarray,
        train: np.ndarray,
        test: np.ndarray,
        use_pca: bool,
        keep_transform: bool = False,
        impute: np.ndarray | None = None,
    ) -> SplitKernel:
        """Preprocessing fitted on the ``train`` rows and the split reduced to its Gram matrices; ``impute``:
        positions of the columns whose missing values are filled first with their ``train``-row means (as
        :class:`~src.models.residualize.CovariateResidualizer` does)."""
        n_a, n_b, n_features = len(train), len(test), features.shape[1]
        pinv = design_a = design_b = None
        if codes is not None:  # residualise: OLS on the training rows only, as CovariateResidualizer
            design_a, design_b = codes.design(train, train), codes.design(train, test)
            pinv = np.linalg.pinv(design_a)  # residualize.least_squares of every block, one SVD for all
        impute = impute if impute is not None else np.zeros(0, dtype=np.intp)
        gram, cross, test_norms, sum_train = np.zeros((n_a, n_a)), np.zeros((n_b, n_a)), np.zeros(n_b), 0.0
        kept: dict[str, list[np.ndarray]] = {name: [] for name in ("coef", "mean", "scale", "za", "fill")}
        centring = (np.zeros(n_a), np.zeros(n_b), [0.0])  # PCA's: za @ mean, zb @ mean, mean @ mean
        width = max(1, _BLOCK_BYTES // (8 * max(n_a, 1)))
        for lo in range(0, n_features, width):
            block = slice(lo, min(lo + width, n_features))
            # float64 copies of the block's rows, whatever the stored type (a float32 table is cast exactly)
            fa = features[train, block].astype(float, copy=False)
            fb = features[test, block].astype(float, copy=False)
            here = impute[(impute >= block.start) & (impute < block.stop)] - block.start
            if len(here):  # fill missing values with their training-row means, as CovariateResidualizer
                fill = column_means(fa[:, here])
                for part in (fa, fb):
                    values = part[:, here]
                    part[:, here] = np.where(np.isnan(values), fill[None, :], values)
                kept["fill"].append(fill)
            coef = np.zeros((0, fa.shape[1]))
            if pinv is not None:  # in place: the block copies are ours
                coef = pinv @ fa
                fa -= design_a @ coef
                fb -= design_b @ coef
            scaler = StandardScaler(copy=False).fit(fa)  # scaling statistics of the training rows only
            za = scaler.transform(fa)  # in place, as the copy would be computed
            zb = scaler.transform(fb) if n_b else np.zeros((0, fa.shape[1]))
            gram += za @ za.T
            cross += zb @ za.T
            test_norms += np.einsum("ij,ij->i", zb, zb)
            sum_train += float(za.sum())
            if use_pca:
                mean = za.mean(axis=0)
                centring[0][:] += za @ mean
                centring[1][:] += zb @ mean
                centring[2][0] += float(mean @ mean)
                kept.setdefault("pca_mean", []).append(mean)
            if keep_transform:
                for name, value in (
                    ("coef", coef),
                    ("mean", scaler.mean_),
                    ("scale", scaler.scale_),
                    ("za", za),
                ):
                    kept[name].append(value)
        split = cls(
            y=np.ascontiguousarray(y[train], dtype=float),
            gram=gram,
            cross=cross,
            test_norms=test_norms,
            n_features=n_features,
            sum_train=sum_train,
        )
        if use_pca:
            mean = np.concatenate(kept["pca_mean"]) if kept.get("pca_mean") else np.zeros(0)
            split._add_pca(mean, *centring[:2], centring[2][0])
        if keep_transform:
            split.transform = {
                "coef": np.hstack(kept["coef"]) if kept["coef"] else np.zeros((0, 0)),
                "mean": np.concatenate(kept["mean"]) if kept["mean"] else np.zeros(0),
                "scale": np.concatenate(kept["scale"]) if kept["scale"] else np.zeros(0),
                "za": kept["za"],  # the blocks: linear_affine maps weights back block by block
                "fill": np.concatenate(kept["fill"]) if kept["fill"] else np.zeros(0),
            }
        return split

    def _add_pca(self, mean: np.ndarray, pa: np.ndarray, pb: np.ndarray, mm: float) -> None:
        # PCA centres on the training mean (~0 after scaling, but not exactly): the Gram matrices of the
        # centred rows, from the uncentred ones and the products with the mean accumulated with them (no
        # second pass over the features)
        gram = self.gram - pa[:, None] - pa[None, :] + mm
        cross = self.cross - pb[:, None] - pa[None, :] + mm
        eigenvalues, vectors = np.linalg.eigh(gram)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues, vectors = eigenvalues[order], vectors[:, order]
        total = float(np.trace(gram))  # = the sum of all PCA variances (times n - 1)
        keep = eigenvalues > eigenvalues[0] * 1e-12  # rank <= n - 1: drop the null space
        eigenvalues, vectors = eigenvalues[keep], vectors[:, keep]
        roots = np.sqrt(eigenvalues)
        self.scores = vectors * roots
        self.test_scores = cross @ vectors / roots
        self.cumulative_ratio = np.cumsum(eigenvalues / total)
        self._pca = (mean, vectors, roots)

    def kernels(self, params: dict[str, Any], n_components: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(train x train, test x train) kernels of the SVC in ``params`` (on the first ``n_components``
        PCA scores when given)."""
        if n_components is None:
            gram, cross, n_features, sum_all = self.gram, self.cross, self.n_features, self.sum_train
            test_norms = self.test_norms
        else:
            a, b = self.scores[:, :n_components], self.test_scores[:, :n_components]
            gram, cross, n_features, sum_all = a @ a.T, b @ a.T, n_components, float(a.sum())
            test_norms = np.einsum("ij,ij->i", b, b)
        kernel = params.get("kernel", SVC_DEFAULTS["kernel"])
        if kernel == "linear":
            return gram, cross
        norms = np.diag(gram)
        gamma = _gamma(
            params.get("gamma", SVC_DEFAULTS["gamma"]), n_features, float(norms.sum()), sum_all, len(norms)
        )
        coef0 = float(params.get("coef0", SVC_DEFAULTS["coef0"]))
        if kernel == "rbf":  # exp(-gamma |x - x'|^2), the distance from the Gram matrix as libsvm computes it
            train = np.exp(-gamma * (norms[:, None] + norms[None, :] - 2 * gram))
            test = np.exp(-gamma * (test_norms[:, None] + norms[None, :] - 2 * cross))
            return train, test
        if kernel == "poly":
            degree = int(params.get("degree", SVC_DEFAULTS["degree"]))
            return (gamma * gram + coef0) ** degree, (gamma * cross + coef0) ** degree
        if kernel == "sigmoid":
            return np.tanh(gamma * gram + coef0), np.tanh(gamma * cross + coef0)
        raise ValueError(f"kernel {kernel!r} is not supported")


def linear_affine(
    split: SplitKernel, params: dict[str, Any], n_components: int | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """The exact affine form of the linear pipeline fitted on ``split``'s training rows (built with
    ``keep_transform``): ``(weights, covariate_weights, intercept)`` as ``AffineDecision.from_pipeline``
    derives them from a fitted Pipeline, here from the libsvm solution on the kernel — no SVD of the
    (rows x features) matrix. With PCA, the principal axes are ``C' U / sqrt(lambda)`` (``C``: the centred
    training rows, ``U, lambda``: the centred Gram's eigenpairs), so the SVC's weight vector in the scaled
    feature space is ``C' (U_m a / sqrt(lambda_m))`` with ``a`` its weights on the first m scores."""
    gram, _ = split.kernels(params, n_components)
    support, dual, intercept = fit_dual(gram, split.y, params)
    beta = np.zeros(len(split.y))
    beta[support] = dual  # SVC's signed dual coefficients (> 0 pushes towards class 1), or a regressor's
    blocks = split.transform["za"]  # the scaled training rows, in column blocks (SplitKernel.build)
    offset = intercept
    if n_components is None:
        w = np.concatenate([za.T @ beta for za in blocks]) if blocks else np.zeros(0)
    else:
        mean, vectors, roots = split._pca
        a = split.scores[:, :n_components].T @ beta  # the SVC's weights on the m scores
        u = vectors[:, :n_components] @ (a / roots[:n_components])
        edges = np.cumsum([0, *(za.shape[1] for za in blocks)])
        parts = zip(blocks, edges[:-1], edges[1:], strict=True)
        w = np.concatenate([(za - mean[lo:hi]).T @ u for za, lo, hi in parts])
        offset -= float(w @ mean)
    v = w / split.transform["scale"]
    offset -= float(v @ split.transform["mean"])
    coef = split.transform["coef"]
    covariate_weights = coef @ v if coef.size else np.zeros(0)
    return v, covariate_weights, offset


def _gamma(gamma: Any, n_features: int, sum_squares: float, sum_all: float, n_rows: int) -> float:
    """SVC's gamma: a number, or ``"scale"`` = 1 / (n_features * X.var()) and ``"auto"`` = 1 / n_features,
    X.var() computed from the kernel's trace and the sum of X's entries."""
    if gamma == "auto":
        return 1.0 / n_features
    if gamma == "scale":
        size = n_rows * n_features
        variance = sum_squares / size - (sum_all / size) ** 2
        return 1.0 / (n_features * variance) if variance != 0 else 1.0
    return float(gamma)


def fit_svc(gram: np.ndarray, y: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit a C-SVC on a precomputed training kernel: (support indices, signed dual coefficients,
    intercept) with SVC's signs for a binary problem (``decision = K[:, support] @ dual + intercept``,
    > 0 means class 1)."""
    C = float(params.get("C", SVC_DEFAULTS["C"]))
    tol = float(params.get("tol", SVC_DEFAULTS["tol"]))
    max_iter = int(params.get("max_iter", -1))
    if _libsvm is None:  # pragma: no cover
        svc = SVC(
            kernel="precomputed", C=C, tol=tol, max_iter=max_iter, class_weight=params.get("class_weight")
        )
        svc.fit(gram, y)
        return svc.support_, svc.dual_coef_[0], float(svc.intercept_[0])
    _libsvm.set_verbosity_wrap(0)  # libsvm prints its iterations unless told (SVC.fit does this too)
    support, _, _, dual_coef, intercept, *_ = _libsvm.fit(
        np.ascontiguousarray(gram),
        y,
        svm_type=0,
        sample_weight=np.empty(0),
        class_weight=_class_weight(params.get("class_weight"), y),
        kernel="precomputed",
        C=C,
        nu=0.5,
        probability=0,
        degree=3,
        shrinking=1,
        tol=tol,
        cache_size=200,
        coef0=0.0,
        gamma=0.0,
        epsilon=0.1,
        max_iter=max_iter,
        random_seed=0,
    )
    # libsvm's binary decision is for the first class; SVC flips the signs so that > 0 means class 1
    return support, -dual_coef[0], -float(intercept[0])


def fit_dual(gram: np.ndarray, y: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
    """(support indices, dual coefficients, intercept) of the model in ``params`` fitted on a precomputed
    training kernel: ``prediction = K[:, support] @ dual + intercept`` (a C-SVC's decision score, or a
    regressor's predicted outcome)."""
    return fit_regressor(gram, y, params) if is_regressor(params) else fit_svc(gram, y, params)


def fit_regressor(
    gram: np.ndarray, y: np.ndarray, params: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Epsilon-SVR (libsvm, ``estimator: svr``) or kernel ridge (``estimator: kernel_ridge``) on a
    precomputed training kernel, fitted on the target standardised with the training rows' mean and SD, as
    ``TransformedTargetRegressor(regressor, transformer=StandardScaler())`` does (so ``epsilon``, ``C`` and
    ``alpha`` are in SD units of the outcome, whatever its scale); returned in the outcome's units."""
    mean = float(y.mean())
    sd = float(y.std())
    sd = sd if sd > 0 else 1.0  # StandardScaler's rule for a constant column
    z = np.ascontiguousarray((y - mean) / sd, dtype=float)
    if params.get("estimator") == "kernel_ridge":
        # KernelRidge(kernel="precomputed").fit: (K + alpha I) dual = z, no intercept (z is centred); one
        # Cholesky solve, as its _solve_cholesky_kernel
        alpha = float(params.get("alpha", 1.0))
        dual = scipy.linalg.solve(gram + alpha * np.eye(len(z)), z, assume_a="pos")
        return np.arange(len(z)), dual * sd, mean
    C = float(params.get("C", SVC_DEFAULTS["C"]))
    epsilon = float(params.get("epsilon", 0.1))
    tol = float(params.get("tol", SVC_DEFAULTS["tol"]))
    max_iter = int(params.get("max_iter", -1))
    if _libsvm is None:  # pragma: no cover
        svr = SVR(kernel="precomputed", C=C, epsilon=epsilon, tol=tol, max_iter=max_iter).fit(gram, z)
        return svr.support_, svr.dual_coef_[0] * sd, float(svr.intercept_[0]) * sd + mean
    _libsvm.set_verbosity_wrap(0)
    support, _, _, dual_coef, intercept, *_ = _libsvm.fit(
        np.ascontiguousarray(gram),
        z,
        svm_type=3,  # epsilon-SVR, as SVR; its dual coefficients and intercept need no sign flip
        sample_weight=np.empty(0),
        class_weight=np.empty(0),
        kernel="precomputed",
        C=C,
        nu=0.5,
        probability=0,
        degree=3,
        shrinking=1,
        tol=tol,
        cache_size=200,
        coef0=0.0,
        gamma=0.0,
        epsilon=epsilon,
        max_iter=max_iter,
        random_seed=0,
    )
    return support, dual_coef[0] * sd, float(intercept[0]) * sd + mean


def fit_decision(gram: np.ndarray, y: np.ndarray, cross: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Fit the model in ``params`` on a precomputed training kernel and return the test rows' scores: a
    C-SVC's decision (as ``SVC.decision_function``: > 0 means class 1) or a regressor's prediction."""
    support, dual, intercept = fit_dual(gram, y, params)
    return cross[:, support] @ dual + intercept


def _class_weight(class_weight: Any, y: np.ndarray) -> np.ndarray:
    """libsvm's per-class weights, as ``compute_class_weight`` gives them to SVC."""
    if class_weight is None:
        return np.empty(0)
    counts = np.bincount(y.astype(np.intp), minlength=2).astype(float)
    if class_weight == "balanced":
        return len(y) / (2 * counts)
    return np.asarray([float(class_weight.get(c, 1.0)) for c in (0, 1)])
