"""A model that fails when asked: the shadow the serving process must survive."""
from river import base


class Exploding(base.Classifier):
    def learn_one(self, x, y):
        pass

    def predict_proba_one(self, x):
        raise RuntimeError("this shadow model always fails")
