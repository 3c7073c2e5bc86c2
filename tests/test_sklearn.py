"""nnlite's scikit-learn estimators: scikit-learn's own checks, pipelines, searches, Dask."""
import pickle

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from nnlite.sklearn import NNClassifier, NNRegressor

from conftest import skip_or_fail


@parametrize_with_checks([NNClassifier(), NNRegressor()])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def test_string_labels_lists_and_probabilities(digits):
    x, xt, y, yt = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])
    clf = NNClassifier(hidden_layer_sizes=(32,), epochs=20, random_state=0)
    clf.fit(x.tolist(), names[y].tolist())
    assert list(clf.classes_) == sorted(names)
    proba = clf.predict_proba(xt)
    assert proba.shape == (len(xt), 10) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(xt))
    assert clf.score(xt, names[yt]) > 0.9
    assert len(clf.loss_curve_) == 20 and clf.n_features_in_ == 64
    assert clf.model_[0].weight.data.dtype == np.float64


def test_pandas_frames_keep_feature_names(digits):
    pd = pytest.importorskip("pandas")
    x, xt, y, yt = digits
    frame = pd.DataFrame(x, columns=[f"px{i}" for i in range(64)])
    clf = NNClassifier(hidden_layer_sizes=(16,), epochs=5, random_state=0).fit(frame, y)
    assert list(clf.feature_names_in_) == list(frame.columns)


def test_one_class_is_a_clear_error():
    with pytest.raises(ValueError, match="only 1 class"):
        NNClassifier().fit(np.ones((5, 2)), np.zeros(5))


def test_regressor_multi_output_and_float32(rng):
    x = rng.standard_normal((300, 4))
    y = np.c_[x[:, 0] - 2 * x[:, 1], x[:, 2] * x[:, 3]]
    reg = NNRegressor(hidden_layer_sizes=(64,), epochs=100, random_state=0).fit(x, y)
    pred = reg.predict(x)
    assert pred.shape == (300, 2) and pred.dtype == np.float64
    assert reg.score(x, y) > 0.9
    reg32 = NNRegressor(epochs=3, random_state=0).fit(x.astype(np.float32), y[:, 0])
    assert reg32.model_.dtype == np.float32 and reg32.predict(x).dtype == np.float64


def test_same_random_state_same_model_and_early_stopping(digits):
    x, xt, y, yt = digits
    kw = dict(hidden_layer_sizes=(32,), dropout=0.2, epochs=100, early_stopping=True,
              patience=3, random_state=7)
    a, b = NNClassifier(**kw).fit(x, y), NNClassifier(**kw).fit(x, y)
    np.testing.assert_array_equal(a.predict_proba(xt), b.predict_proba(xt))
    assert a.n_iter_ < 100  # stopped early


def test_partial_fit_continues_and_pickle_round_trips(digits):
    x, xt, y, yt = digits
    clf = NNClassifier(hidden_layer_sizes=(32,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(x, y)
    for _ in range(3):
        clf.partial_fit(x, y, classes=np.arange(10))
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 3
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(xt), clf.predict_proba(xt))
    copy.partial_fit(x, y)
    clf.partial_fit(x, y)  # the unpickled optimizer continues exactly as the original
    np.testing.assert_array_equal(copy.predict_proba(xt), clf.predict_proba(xt))


def search(n_jobs):
    return GridSearchCV(
        make_pipeline(StandardScaler(), NNClassifier(epochs=30, random_state=0)),
        {"nnclassifier__hidden_layer_sizes": [(32,), (64,)],
         "nnclassifier__learning_rate": [1e-3, 3e-3]},
        cv=3, n_jobs=n_jobs)


def test_grid_search_with_two_processes(digits):
    x, xt, y, yt = digits
    found = search(n_jobs=2).fit(x, y)
    assert found.score(xt, yt) >= 0.93


def test_grid_search_on_a_dask_cluster(digits):
    try:
        import joblib
        from dask.distributed import Client, LocalCluster
    except ImportError:
        skip_or_fail("Dask is not installed: pip install -e '.[distributed]'")
    x, xt, y, yt = digits
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        with joblib.parallel_backend("dask"):
            found = search(n_jobs=-1).fit(x, y)
        workers = client.run(lambda: __import__("os").getpid())
    assert len(workers) == 2
    assert found.score(xt, yt) >= 0.93
