"""The digits classifier behind the model API: training, a hashed on-disk cache, input checks.

The model is deliberately small: scikit-learn's bundled 8x8 digits (1,797 images, no
download) and a classifier that trains in well under a second on one core. What the labs
study is the service around it, not the model: a replica must load it before it is ready,
and ``MODEL_LOAD_DELAY_S`` in :mod:`hadrlab.serving` stands in for a large model's load time.

The trained model is cached under ``<home_dir()>/models/<version>.pkl`` next to a
``<version>.sha256`` file, so the first replica trains and the others only load. A cache
file whose hash does not match, or that was written by another scikit-learn version, is
retrained and replaced.

Example:
    >>> model = load_model("v1")
    >>> model.predict(parse_images({"image": [0] * 64}))
    [...]
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "IMAGE_SIDE",
    "IMAGE_PIXELS",
    "PIXEL_MAX",
    "InvalidInput",
    "BatchTooLarge",
    "TrainedModel",
    "split_digits",
    "train_estimator",
    "load_model",
    "parse_images",
    "remove_cached",
]

IMAGE_SIDE = 8
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE
PIXEL_MAX = 16.0
# A fixed, shuffled split: the held-out part is never trained on, so tests and labs can
# measure accuracy on images the model has not seen.
HOLDOUT_SIZE = 360
SPLIT_SEED = 0

_SHAPE = (
    f"{IMAGE_PIXELS} numbers or {IMAGE_SIDE} rows of {IMAGE_SIDE} numbers "
    f"(one {IMAGE_SIDE}x{IMAGE_SIDE} digit), each between 0 and {PIXEL_MAX:g}"
)
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# --------------------------------------------------------------------------- input checks


class InvalidInput(ValueError):
    """A /predict body that does not hold valid images; the message says what was expected."""

    status_code = 422


class BatchTooLarge(InvalidInput):
    """A /predict batch with more images than the replica accepts (MAX_BATCH)."""

    status_code = 413


def _describe(value: Any) -> str:
    """Name a JSON value's type the way a learner who sent it would."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 20 else value[:17] + "..."
        return f"the string {shown!r}"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    return repr(value)


def _is_number(value: Any) -> bool:
    # bool is a subclass of int in Python, but true/false are not pixel values.
    return type(value) is int or type(value) is float


def _parse_one(image: Any, where: str) -> list[float]:
    """Return one image as a flat list of 64 numbers, or raise InvalidInput."""
    if not isinstance(image, list):
        raise InvalidInput(f"{where} must be {_SHAPE}; got {_describe(image)}.")
    if len(image) == IMAGE_PIXELS and all(not isinstance(v, list) for v in image):
        flat, positions = image, [f"{where}[{i}]" for i in range(IMAGE_PIXELS)]
    elif len(image) == IMAGE_SIDE and all(isinstance(row, list) for row in image):
        for r, row in enumerate(image):
            if len(row) != IMAGE_SIDE:
                raise InvalidInput(
                    f"{where} must be {_SHAPE}; got {IMAGE_SIDE} rows, "
                    f"but row {r} has {len(row)} values."
                )
        flat = [v for row in image for v in row]
        positions = [f"{where}[{r}][{c}]" for r in range(IMAGE_SIDE) for c in range(IMAGE_SIDE)]
    else:
        raise InvalidInput(f"{where} must be {_SHAPE}; got {_describe(image)}.")
    for value, pos in zip(flat, positions):
        if not _is_number(value):
            raise InvalidInput(
                f"{where} must contain only numbers between 0 and {PIXEL_MAX:g}; "
                f"{pos} is {_describe(value)}."
            )
        if not 0.0 <= value <= PIXEL_MAX:  # also false for NaN and infinities
            raise InvalidInput(
                f"{where} values must be between 0 and {PIXEL_MAX:g} (the pixel intensities "
                f"of the digits dataset); {pos} is {value!r}. Rescale the image to 0-16."
            )
    return flat


def parse_images(body: Any, max_batch: int = 256) -> np.ndarray:
    """Check a /predict request body and return its images as an (n, 64) float array.

    Args:
        body: the decoded JSON body: ``{"image": IMAGE}`` or ``{"images": [IMAGE, ...]}``,
            where IMAGE is 64 numbers or 8 rows of 8 numbers, each 0-16.
        max_batch: the most images one request may carry.

    Returns:
        A float array of shape (n, 64).

    Raises:
        InvalidInput: the body is malformed; the message says exactly what was expected.
        BatchTooLarge: the batch has more than ``max_batch`` images.
    """
    example = '{"image": [64 numbers]} or {"images": [[64 numbers], ...]}'
    if not isinstance(body, dict):
        raise InvalidInput(
            f"The request body must be a JSON object such as {example}; got {_describe(body)}."
        )
    has_one, has_many = "image" in body, "images" in body
    if has_one and has_many:
        raise InvalidInput('Send either "image" (one image) or "images" (a list), not both.')
    if not has_one and not has_many:
        keys = ", ".join(sorted(map(str, body))) or "none"
        raise InvalidInput(
            f'The request body must have a field "image" ({_SHAPE}) or "images" '
            f"(a list of such images), as in {example}; got fields: {keys}."
        )
    if has_one:
        return np.asarray([_parse_one(body["image"], '"image"')], dtype=float)
    images = body["images"]
    if not isinstance(images, list) or not images:
        raise InvalidInput(
            f'"images" must be a non-empty list of images, each {_SHAPE}; '
            f"got {_describe(images)}."
        )
    if len(images) > max_batch:
        raise BatchTooLarge(
            f"A batch of {len(images)} images is over this replica's limit of {max_batch} "
            f"(MAX_BATCH). Split it into requests of at most {max_batch} images."
        )
    return np.asarray(
        [_parse_one(img, f'"images"[{i}]') for i, img in enumerate(images)], dtype=float
    )


# --------------------------------------------------------------------------- training


def split_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the digits dataset split into (X_train, y_train, X_holdout, y_holdout).

    The split is shuffled with a fixed seed, so it is the same on every machine; the
    held-out images (360 of 1,797) are never used for training.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(digits.target))
    held, train = order[:HOLDOUT_SIZE], order[HOLDOUT_SIZE:]
    return digits.data[train], digits.target[train], digits.data[held], digits.target[held]


def train_estimator(version: str = "v1") -> Any:
    """Train and return a fresh scikit-learn classifier for ``version``.

    ``"v2"`` is an RBF support-vector classifier (about 99% held-out accuracy); every other
    version, ``"v1"`` included, is a scaled logistic regression (about 96%). Two recipes
    are enough for a rolling update to change something a learner can see.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    X, y, _, _ = split_digits()
    if version == "v2":
        estimator = SVC(gamma=0.001, C=10.0)
    else:
        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=0.5))
    estimator.fit(X, y)
    return estimator


@dataclass
class TrainedModel:
    """A classifier ready to predict, and where it came from.

    Attributes:
        version: the model version it serves, e.g. ``"v1"``.
        sha256: hash of the cached artefact, the model's identity.
        from_cache: True if loaded from the cache, False if trained just now.
        load_s: seconds spent training or loading.
        holdout_accuracy: accuracy on the held-out digits, measured when trained.
        path: the cached artefact.
    """

    version: str
    sha256: str
    from_cache: bool
    load_s: float
    holdout_accuracy: float
    path: Path
    estimator: Any = field(repr=False)

    def predict(self, images: np.ndarray) -> list[int]:
        """Return the predicted digit (0-9) of each row of an (n, 64) array."""
        return [int(label) for label in self.estimator.predict(images)]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_cache(pkl: Path, sha: Path) -> tuple[dict, str] | None:
    """Return (artefact, sha256) if the cache is intact and from this scikit-learn."""
    import sklearn

    try:
        digest = _sha256(pkl)
        if sha.read_text().split()[0] != digest:
            return None
        with open(pkl, "rb") as fh:
            artefact = pickle.load(fh)  # our own file, verified against its hash above
    except (OSError, IndexError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
        return None
    if not isinstance(artefact, dict) or artefact.get("sklearn") != sklearn.__version__:
        return None
    return artefact, digest


def _write_atomic(path: Path, data: bytes) -> None:
    # Replicas may start together and train at once: each writes its own temporary file
    # and renames it into place, so no replica ever reads a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_model(version: str = "v1", cache_dir: str | os.PathLike | None = None) -> TrainedModel:
    """Load the classifier for ``version`` from the cache, training and caching it if needed.

    Args:
        version: the model version; letters, digits, ``.``, ``_`` and ``-`` only.
        cache_dir: where artefacts live; default ``home_dir()/models``.

    Returns:
        The :class:`TrainedModel`.
    """
    import sklearn

    if not _VERSION_RE.match(version):
        raise ValueError(
            f"Model version {version!r} is not a valid name: use up to 64 letters, digits, "
            f"'.', '_' or '-', such as 'v1' or 'v2'."
        )
    if cache_dir is None:
        from hadrlab.processes import home_dir

        cache_dir = home_dir() / "models"
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    pkl, sha = folder / f"{version}.pkl", folder / f"{version}.sha256"

    start = time.perf_counter()
    cached = _read_cache(pkl, sha)
    if cached is not None:
        artefact, digest = cached
        from_cache = True
    else:
        estimator = train_estimator(version)
        _, _, X_held, y_held = split_digits()
        accuracy = float((estimator.predict(X_held) == y_held).mean())
        artefact = {
            "version": version,
            "sklearn": sklearn.__version__,
            "holdout_accuracy": accuracy,
            "estimator": estimator,
        }
        data = pickle.dumps(artefact, protocol=pickle.HIGHEST_PROTOCOL)
        digest = hashlib.sha256(data).hexdigest()
        _write_atomic(pkl, data)
        _write_atomic(sha, f"{digest}  {pkl.name}\n".encode())
        from_cache = False
    return TrainedModel(
        version=version,
        sha256=digest,
        from_cache=from_cache,
        load_s=time.perf_counter() - start,
        holdout_accuracy=artefact["holdout_accuracy"],
        path=pkl,
        estimator=artefact["estimator"],
    )


def remove_cached(version: str, cache_dir: str | os.PathLike | None = None) -> None:
    """Delete the cached artefact of ``version`` (the next load retrains). Idempotent."""
    if cache_dir is None:
        from hadrlab.processes import home_dir

        cache_dir = home_dir() / "models"
    for suffix in (".pkl", ".sha256"):
        with contextlib.suppress(FileNotFoundError):
            (Path(cache_dir) / f"{version}{suffix}").unlink()
