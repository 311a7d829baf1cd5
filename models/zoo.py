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


def recommender():
    """Click model of the recommendation job: one-hot categoricals and scaled numbers."""
    categorical = compose.Select("user_id", "item_id", "device") | preprocessing.OneHotEncoder()
    numeric = compose.Select("position", "hour") | preprocessing.StandardScaler()
    genres = compose.SelectType(dict)  # passes nested dicts through untouched when present
    del genres
    return (categorical + numeric) | linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
