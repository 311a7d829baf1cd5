"""Default model factories. Each returns a fresh, unfitted river estimator.

Any function of the same shape elsewhere works too: pass it as `--model MODULE:FUNCTION`.
"""
from river import compose, linear_model, optim, preprocessing, tree


def logistic_regression():
    """Binary classifier: scaled numeric features into a logistic regression."""
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


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


def recommender():
    """Click model of the recommendation job: indicator features into a logistic regression.

    A module-level function (not a lambda) inside, so the model pickles into Beam state.
    """
    return compose.FuncTransformer(one_hot_text) | linear_model.LogisticRegression(
        optimizer=optim.SGD(0.05))
