"""Default model factories. Each returns a fresh, unfitted river estimator.

Any function of the same shape elsewhere works too: pass it as `--model MODULE:FUNCTION`.
"""
import math

from river import compose, linear_model, optim, preprocessing, tree


def logistic_regression(learning_rate: float = 0.01):
    """Binary classifier: scaled numeric features into a logistic regression (SGD).

    Also learns mini-batches (`learn_many`): a mini-batch is one step on its mean gradient, so
    mini-batch learning may want a larger `learning_rate` than the per-event default.
    """
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate))


def multiclass_logistic_regression():
    """Multiclass classifier: one-vs-rest logistic regressions over scaled features."""
    from river import multiclass

    return preprocessing.StandardScaler() | multiclass.OneVsRestClassifier(linear_model.LogisticRegression())


def hoeffding_tree():
    """Multiclass classifier: a Hoeffding tree (no scaling needed)."""
    return tree.HoeffdingTreeClassifier()


def linear_regression():
    """Regressor: scaled numeric features into a linear regression."""
    return preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.SGD(0.01))


def one_hot_text(x: dict) -> dict:
    """Text features become `name=value` indicators; numbers pass through.

    >>> one_hot_text({"device": "tv", "genre_drama": 1.0})
    {'device=tv': 1.0, 'genre_drama': 1.0}
    """
    return {(f"{k}={v}" if isinstance(v, str) else k): (1.0 if isinstance(v, str) else v)
            for k, v in x.items()}


CATEGORICAL = ("user_id", "item_id", "device", "position", "hour")


def recommender(hash_size: int = 2 ** 16, learning_rate: float = 0.05, prior_ctr: float = 0.1):
    """Click model of the recommendation job: a logistic regression over hashed categoricals
    (ids, device, slot, hour: `hash_size` buckets, so unseen ids need no vocabulary) and
    standardised numeric features (genres, entity features), by AdaGrad.

    The intercept starts at the log-odds of `prior_ctr`, not at 0 (a 50% click rate): until
    the first delayed labels arrive the model predicts the prior, not a coin flip.

    >>> model = recommender(hash_size=64)
    >>> x = {"user_id": "u1", "item_id": "i1", "device": "tv", "position": "2", "hour": "20",
    ...      "genre_drama": 1.0, "u_ctr_24h": 0.3}
    >>> round(model.predict_proba_one(x)[True], 3)
    0.1
    >>> model.learn_one(x, True)
    >>> model.predict_proba_one(x)[True] > 0.1
    True
    """
    hashed = compose.FuncTransformer(categorical) | preprocessing.FeatureHasher(hash_size, seed=0)
    scaled = compose.Discard(*CATEGORICAL) | preprocessing.StandardScaler() | compose.FuncTransformer(clip)
    return (hashed + scaled) | linear_model.LogisticRegression(
        optimizer=optim.AdaGrad(learning_rate), intercept_init=math.log(prior_ctr / (1 - prior_ctr)))


def categorical(x: dict) -> dict:
    """The categorical features, always in the order of CATEGORICAL. (river's `Select` keeps
    its keys in a set, whose order follows the process's string hashing: the model then summed
    its terms in another order in each process, and a job restarted in a new process predicted
    differently in the last bit.)

    >>> list(categorical({"hour": "1", "device": "tv", "position": "2", "item_id": "i", "user_id": "u", "x": 1.0}))
    ['user_id', 'item_id', 'device', 'position', 'hour']
    """
    return {k: x[k] for k in CATEGORICAL}


CLIP = 5.0  # the bound of standardised values (`clip`)


def clip(x: dict, bound: float = CLIP) -> dict:
    """Standardised values within +-bound: a running scaler's first variances are tiny, and
    one outlier scaled by them would swamp a linear model's weights.

    >>> clip({"a": 12.0, "b": -0.5})
    {'a': 5.0, 'b': -0.5}
    """
    # Comparisons, not max(-bound, min(bound, v)): the same values (NaN gives `bound` in both)
    # at a third of the cost, on every feature of every candidate a server ranks.
    return {k: v if -bound <= v <= bound else (-bound if v < -bound else bound) for k, v in x.items()}


def one_hot_recommender():
    """The previous click model: every text feature one-hot (an unbounded vocabulary)."""
    return compose.FuncTransformer(one_hot_text) | linear_model.LogisticRegression(
        optimizer=optim.SGD(0.05))


def id_collisions(tokens, hash_size: int) -> dict:
    """How the recommender's hashing shares buckets among categorical values.

    `tokens`: distinct (feature, value) pairs seen, e.g. ("user_id", "u1"). Returns their
    count, the buckets they use, and the collision rate: the share of tokens that share a
    bucket with another token.

    >>> id_collisions([("user_id", f"u{i}") for i in range(100)], 2 ** 16)["collision_rate"]
    0.0
    """
    hasher = preprocessing.FeatureHasher(hash_size, seed=0)
    buckets = {}
    for name, value in tokens:
        (bucket,) = hasher.transform_one({name: value})
        buckets[bucket] = buckets.get(bucket, 0) + 1
    n = sum(buckets.values())
    shared = sum(c for c in buckets.values() if c > 1)
    return {"tokens": n, "buckets": len(buckets), "hash_size": hash_size,
            "collision_rate": shared / n if n else 0.0}
