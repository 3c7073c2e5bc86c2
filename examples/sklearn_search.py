"""Tune an nnlite MLP inside a scikit-learn Pipeline with GridSearchCV, on the bundled digits.

The search runs its fits in parallel processes (n_jobs=-1); see README for running the
same search on a Dask or Ray cluster. --quick searches 2 settings for 10 epochs; --plot
DIR writes the best model's confusion matrix on the test set (scikit-learn's
ConfusionMatrixDisplay) there as PNG.
"""
import argparse
import time

from sklearn.datasets import load_digits
from sklearn.metrics import ConfusionMatrixDisplay
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import nnlite
from nnlite.sklearn import NNClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 settings, 10 epochs")
    parser.add_argument("--plot", metavar="DIR", help="write the figure there as PNG")
    args = parser.parse_args()

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    pipeline = Pipeline([("scale", StandardScaler()),
                         ("mlp", NNClassifier(epochs=10 if args.quick else 40,
                                              random_state=0))])
    grid = {"mlp__hidden_layer_sizes": [(64,), (128,), (128, 64)],
            "mlp__dropout": [0.0, 0.2],
            "mlp__learning_rate": [1e-3, 3e-3]}
    if args.quick:
        grid = {"mlp__hidden_layer_sizes": [(64,), (128,)], "mlp__learning_rate": [3e-3]}
    search = GridSearchCV(pipeline, grid, cv=3, n_jobs=-1)
    start = time.perf_counter()
    search.fit(x_train, y_train)
    print(f"searched {len(search.cv_results_['params'])} settings x 3 folds in "
          f"{time.perf_counter() - start:.1f} s")
    print(f"best parameters: {search.best_params_}")
    print(f"best cross-validation accuracy: {search.best_score_:.4f}")
    if args.plot:
        display = ConfusionMatrixDisplay.from_estimator(search, x_test, y_test)
        print("figures:", *nnlite.plot.save_figures(args.plot, {"confusion": display.figure_}))
    print(f"test accuracy: {search.score(x_test, y_test):.4f}")


if __name__ == "__main__":
    main()
