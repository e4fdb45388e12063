"""ember.data.tables and layers.TableEncoder: CSV / DataFrame in, preprocessing kept in the model."""

import numpy as np
import pytest
import torch

import ember
from ember import layers
from ember.data import from_csv, from_dataframe

pd = pytest.importorskip("pandas")


def _houses(n=240):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "area": rng.normal(80, 20, n),
            "city": rng.choice(["Lyon", "Paris", "Nice"], n),
            "rooms": rng.integers(1, 6, n),
        }
    )
    df["label"] = np.where((df.area > 80) | (df.city == "Paris"), "big", "small")
    return df


def test_columns_get_statistics_and_vocabularies():
    df = _houses()
    table = from_dataframe(df, target="label")
    area, city, rooms = table.columns
    assert area["kind"] == "numeric" and area["mean"] == pytest.approx(df.area.mean())
    assert area["std"] == pytest.approx(df.area.std(ddof=0))
    assert city == {"name": "city", "kind": "categorical", "vocabulary": ["Lyon", "Nice", "Paris"]}
    assert rooms["kind"] == "numeric"
    assert table.task == "classification" and table.labels == ["big", "small"]
    assert table.x.dtype == np.float32 and table.x.shape == (240, 3)
    np.testing.assert_array_equal(table.x[:, 1], df.city.map({"Lyon": 0, "Nice": 1, "Paris": 2}))
    np.testing.assert_array_equal(table.y, (df.label == "small").astype(np.int64))


def test_a_float_target_is_regression_and_categorical_can_be_forced():
    df = _houses()
    table = from_dataframe(df, target="area", categorical=["rooms"])
    assert table.task == "regression" and table.y.dtype == np.float32
    assert [c["kind"] for c in table.columns] == ["categorical", "categorical", "categorical"]
    assert table.columns[1]["vocabulary"] == ["1", "2", "3", "4", "5"]


def test_encode_maps_unknown_categories_to_minus_one():
    table = from_dataframe(_houses(), target="label")
    rows = table.encode({"area": [100.0], "city": ["Marseille"], "rooms": [2]})
    np.testing.assert_array_equal(rows, [[100.0, -1.0, 2.0]])
    with pytest.raises(ValueError, match=r"lack the feature columns \['rooms'\]"):
        table.encode({"area": [1.0], "city": ["Lyon"]})


def test_bad_arguments_are_named():
    df = _houses()
    with pytest.raises(ValueError, match="Unknown target column 'price'.*area, city"):
        from_dataframe(df, target="price")
    with pytest.raises(ValueError, match="Unknown task 'ranking'"):
        from_dataframe(df, target="label", task="ranking")
    with pytest.raises(FileNotFoundError, match="No CSV file"):
        from_csv("missing.csv", target="label")


def test_table_encoder_standardises_and_one_hot_encodes():
    enc = layers.TableEncoder(
        [
            {"name": "a", "kind": "numeric", "mean": 10.0, "std": 2.0},
            {"name": "c", "kind": "categorical", "vocabulary": ["x", "y"]},
        ]
    )
    out = enc(torch.tensor([[12.0, 1.0], [float("nan"), -1.0], [10.0, 7.0]]))
    expected = [[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]]
    torch.testing.assert_close(out, torch.tensor(expected))
    assert enc.output_size == 4
    with pytest.raises(ValueError, match=r"expected inputs of shape \(None, 2\)"):
        enc(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="columns\\[0\\]"):
        layers.TableEncoder([{"name": "a", "kind": "text"}])


def test_a_csv_trains_and_its_package_applies_the_same_preprocessing(tmp_path, quiet):
    _houses().to_csv(tmp_path / "houses.csv", index=False)
    table = from_csv(tmp_path / "houses.csv", target="label")
    torch.manual_seed(0)
    model = ember.Sequential(
        [
            layers.Input((table.num_features,)),
            table.encoder(),
            layers.Dense(16, activation="relu"),
            layers.Dense(table.num_outputs),
        ]
    )
    model.compile("adam", "cross_entropy", ["accuracy"], lr=0.01)
    model.fit(table.x, table.y, epochs=15, **quiet)
    assert model.evaluate(table.x, table.y)["accuracy"] > 0.9
    package = model.save(
        tmp_path / "pkg",
        task="classification",
        labels=table.labels,
        preprocessing=table.preprocessing,
    )
    restored = ember.load(package)
    np.testing.assert_allclose(restored.predict(table.x), model.predict(table.x), atol=1e-5)
    stored = restored.manifest["preprocessing"]
    assert stored["columns"] == table.columns and "vocabulary" in stored["input"]


def test_a_model_with_a_table_encoder_takes_raw_rows_before_and_after_load(tmp_path, quiet):
    df = _houses()
    table = from_dataframe(df, target="label")
    torch.manual_seed(0)
    model = ember.Sequential(
        [layers.Input((table.num_features,)), table.encoder(), layers.Dense(table.num_outputs)]
    )
    model.compile("adam", "cross_entropy", ["accuracy"], lr=0.05)
    model.fit(df.drop(columns="label"), table.y, epochs=3, **quiet)  # raw rows train too
    restored = ember.load(model.save(tmp_path / "pkg", preprocessing=table.preprocessing))
    new = pd.DataFrame({"area": [120.0, 50.0], "city": ["Paris", "Marseille"], "rooms": [4, 2]})
    expected = model.predict(table.encode(new))
    for m in (model, restored):
        np.testing.assert_allclose(m.predict(new), expected, atol=1e-6)  # "label" not needed
        np.testing.assert_allclose(m.predict(new.to_dict("list")), expected, atol=1e-6)
    assert model.evaluate(df, table.y) == model.evaluate(table.x, table.y)
    with pytest.raises(ValueError, match=r"lack the feature columns \['city'\]"):
        restored.predict(new.drop(columns="city"))


def test_the_onnx_export_applies_the_table_preprocessing(tmp_path, quiet):
    pytest.importorskip("onnxruntime")
    table = from_dataframe(_houses(), target="label")
    table.x[0, 0], table.x[1, 1] = np.nan, -1.0  # a missing area and an unknown city, kept in
    model = ember.Sequential(
        [layers.Input((table.num_features,)), table.encoder(), layers.Dense(2)]
    )
    model.compile("adam", "cross_entropy", ["accuracy"])
    model.fit(table.x, table.y, epochs=1, **quiet)
    figures = ember.export(model.save(tmp_path / "pkg", task="classification"), ["onnx"])
    assert figures["onnx"]["max_abs_diff"] < 1e-4  # the stored sample holds both


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_the_server_applies_the_table_preprocessing(runtime, tmp_path, quiet):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    pytest.importorskip("onnxruntime")
    from ember.serve.runtime import load_version

    table = from_dataframe(_houses(), target="label")
    model = ember.Sequential(
        [layers.Input((table.num_features,)), table.encoder(), layers.Dense(2)]
    )
    model.compile("adam", "cross_entropy", ["accuracy"])
    model.fit(table.x, table.y, epochs=1, **quiet)
    package = model.save(tmp_path / "pkg", task="classification", labels=table.labels)
    if runtime == "onnxruntime":
        ember.export(package, ["onnx"])
    # A client sends raw numbers and each category's index in the stored vocabulary.
    rows = table.encode({"area": [120.0, 50.0], "city": ["Paris", "Marseille"], "rooms": [4, 2]})
    with ThreadPoolExecutor(1) as pool:
        version = load_version("houses", 1, package, pool, runtime=runtime)
        served = asyncio.run(version.infer({"input": rows}))["output"]
    np.testing.assert_allclose(served, model.predict(rows), atol=1e-4)


def test_rescaling_scales_then_offsets_like_keras():
    torch.testing.assert_close(layers.Rescaling(2.0, 1.0)(torch.tensor([3.0])), torch.tensor([7.0]))
    assert layers.Rescaling(0.5).get_config() == {"scale": 0.5, "offset": 0.0}
    with pytest.raises(ValueError, match="`scale`.*Received: scale='x'"):
        layers.Rescaling("x")
