"""The linear probe of the utility protocols: multinomial logistic regression on frozen features,
optionally pulled toward pre-trained weights (pre-train on synthetic, fine-tune on real).

A linear probe trained to convergence forgets where it started (the loss is convex), so
"pre-train, then fine-tune" needs the pre-trained weights in the objective. This is L2-SP (Li,
Grandvalet and Davis 2018, the standard regulariser of transfer learning): fine-tuning
minimises C · Σ cross-entropy(real) + ½ ||W - W₀||², where W₀ are the weights learnt on the
synthetic images; with W₀ = 0 it is the ordinary L2-regularised logistic regression (scikit-
learn's `LogisticRegression(C)`, which the tests hold it to). Intercepts are not penalised.
Features are standardised with the statistics of the first stage's training set (the synthetic
images when pre-training), kept for the second, like a frozen normalisation layer.

scipy's L-BFGS minimises it (float64, gradient in closed form); deterministic for given inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

C = 1.0
MAX_ITER = 2000


@dataclass
class Probe:
    """A fitted probe: standardisation, weights (d, k) and intercepts (k,) over `n_labels`."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Class scores of feature rows."""
        return ((np.asarray(x, np.float64) - self.mean) / self.scale) @ self.weights + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (softmax of the logits)."""
        z = self.logits(x)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of feature columns (scale 1 where a column is constant), as StandardScaler."""
    x = np.asarray(x, np.float64)
    scale = x.std(axis=0)
    return x.mean(axis=0), np.where(scale > 0, scale, 1.0)


def fit_probe(x: np.ndarray, y: np.ndarray, n_labels: int, *, prior: Probe | None = None,
              c: float = C, max_iter: int = MAX_ITER) -> Probe:
    """Fit the probe on features x (n, d) and integer labels y in [0, n_labels).

    Without `prior`: standardise on x and penalise ||W||². With `prior`: keep its
    standardisation, start from its weights and penalise ||W - W_prior||² (L2-SP).
    """
    from scipy.optimize import minimize

    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    mean, scale = (prior.mean, prior.scale) if prior is not None else standardiser(x)
    z = (x - mean) / scale
    d, k = z.shape[1], n_labels
    w0 = prior.weights if prior is not None else np.zeros((d, k))
    b0 = prior.bias if prior is not None else np.zeros(k)
    onehot = np.eye(k)[y]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d * k].reshape(d, k), theta[d * k:]
        logits = z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        diff = w - w0
        loss = -c * (onehot * logp).sum() + 0.5 * (diff * diff).sum()
        resid = c * (np.exp(logp) - onehot)
        grad_w = z.T @ resid + diff
        return float(loss), np.concatenate([grad_w.ravel(), resid.sum(axis=0)])

    theta0 = np.concatenate([w0.ravel(), b0])
    res = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": 1e-6})
    return Probe(mean, scale, res.x[:d * k].reshape(d, k), res.x[d * k:])


def probabilities(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_labels: int,
                  *, pretrain: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Test-set probabilities of a probe trained on (x_train, y_train); with `pretrain`
    (x, y), first fitted there and then fine-tuned on the training set (L2-SP)."""
    prior = fit_probe(pretrain[0], pretrain[1], n_labels) if pretrain is not None else None
    return fit_probe(x_train, y_train, n_labels, prior=prior).predict_proba(x_test)
