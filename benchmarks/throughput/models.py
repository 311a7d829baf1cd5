"""The measured models, by name, as model specs; and their mini-batch twins."""
from __future__ import annotations

from benchmarks.throughput.data import genre_column, genres

MODELS = {
    "scaled_logistic": "benchmarks.throughput:scaled_logistic",
    "recommender": "models.zoo:recommender",
}
# The opt-in mini-batch mode (`--mini_batch`) needs models whose every step learns DataFrames:
# per model, the twin it is measured with (None: the model has no mini-batch twin).
MINI_BATCH_MODELS = {
    "scaled_logistic": "benchmarks.throughput:scaled_logistic_many",
    "recommender": None,
}


def scaled_logistic():
    """`StandardScaler | LogisticRegression` over the table: text features one-hot first.

    (`models.zoo.logistic_regression` is the same model for numeric-only tables; its scaler
    cannot take the text columns.)
    """
    from river import compose, linear_model, preprocessing

    from models.zoo import one_hot_text

    return (compose.FuncTransformer(one_hot_text) | preprocessing.StandardScaler()
            | linear_model.LogisticRegression())


def scaled_logistic_many(learning_rate: float = 2.0):
    """The mini-batch twin of `scaled_logistic` (learn_many / predict_proba_many): the numeric
    columns, scaled, into a logistic regression. The text columns are left out: one-hot over
    DataFrames (river's OneHotEncoder) costs ~10 ms a call, more than the rest of a 1,024-event
    mini-batch; per event, this model's ROC AUC equals `scaled_logistic`'s on the simulator's
    table. A mini-batch is one SGD step on its mean gradient, hence the larger learning rate.
    """
    from river import compose, linear_model, optim, preprocessing

    numeric = ["position", "hour"] + [genre_column(g) for g in genres()]
    return (compose.Select(*numeric) | preprocessing.StandardScaler()
            | linear_model.LogisticRegression(optimizer=optim.SGD(learning_rate)))
