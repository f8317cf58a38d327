"""The model lifecycle of an AOI: its training set (:mod:`~pipeline.training.trainset`)
and the challenger trained on it, judged against the champion and promoted when it is
better (:mod:`~pipeline.training.challenger`). The network, loss and training loop
themselves are :mod:`pipeline.model`."""
