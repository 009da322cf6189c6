"""The hub, mocked (no network): the probe, pinned revisions, and which failures fall back to the offline data
and weights (network and hub errors) and which propagate (bugs)."""

import http.server
import threading

import pytest
from huggingface_hub import constants
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import close_session, httpx

from alignlib import config, data, hub, models

MIRROR = "https://hf-mirror.example"


@pytest.fixture(autouse=True)
def fresh_probe():
    """Each test probes anew and leaves no remembered answer behind."""
    hub.endpoint_reachable.cache_clear()
    yield
    hub.endpoint_reachable.cache_clear()


class FakeSession:
    """Stands for huggingface_hub's HTTP client: records each HEAD request, answers `status` or raises `error`."""

    def __init__(self, status=200, error=None):
        self.status, self.error, self.requests = status, error, []

    def head(self, url, timeout):
        self.requests.append((url, timeout))
        if self.error is not None:
            raise self.error
        return httpx.Response(self.status, request=httpx.Request("HEAD", url))


@pytest.fixture
def online(monkeypatch):
    """HF_HUB_OFFLINE unset, the endpoint a mirror, and a fake HTTP client (returned) for the probe."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", MIRROR)
    session = FakeSession()
    monkeypatch.setattr(hub, "get_session", lambda: session)
    return session


# ------------------------------------------------------------------------------ the probe

def test_probe_asks_the_configured_endpoint_with_a_short_timeout(online):
    assert hub.hub_available()
    assert online.requests == [(MIRROR, hub.PROBE_TIMEOUT_S)] and hub.PROBE_TIMEOUT_S == 3.0


@pytest.mark.parametrize("error", [httpx.ConnectError("[Errno 111] Connection refused"),
                                   httpx.ConnectTimeout("timed out"),
                                   httpx.ProxyError("407 Proxy Authentication Required")])
def test_probe_says_no_on_a_connection_error_or_timeout_and_says_why(online, error, capsys):
    online.error = error
    assert not hub.hub_available()
    out = capsys.readouterr().out
    assert MIRROR in out and type(error).__name__ in out and "HF_HUB_OFFLINE=1" in out and "HF_ENDPOINT" in out


def test_probe_says_no_when_the_endpoint_answers_with_a_server_error(online):
    online.status = 503
    assert not hub.hub_available()


def test_offline_request_short_circuits_without_any_request(online, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub.hub_available()
    assert online.requests == []


def test_probe_result_is_remembered_for_the_process(online):
    assert hub.hub_available() and hub.hub_available()
    assert len(online.requests) == 1
    online.error = httpx.ConnectError("down now")  # remembered: the second answer is not asked for
    assert hub.hub_available() and len(online.requests) == 1
    hub.endpoint_reachable.cache_clear()
    assert not hub.hub_available() and len(online.requests) == 2


class RecordingProxy(http.server.BaseHTTPRequestHandler):
    """An HTTP proxy on localhost that answers every request itself and records its target."""
    targets: list[str] = []

    def do_HEAD(self):
        self.targets.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_probe_goes_through_the_proxy_of_the_environment(monkeypatch):
    """huggingface_hub's own client reads HTTP(S)_PROXY: the probe reaches a host that does not resolve
    because the (local) proxy answers for it."""
    server = http.server.HTTPServer(("127.0.0.1", 0), RecordingProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = "http://hub.alignlib-test.invalid"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # conftest set it before huggingface_hub was imported
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.server_address[1]}")
    close_session()  # the client reads the proxy settings when it is made
    try:
        assert hub.hub_available()
    finally:
        close_session()
        server.shutdown()
        server.server_close()
    assert RecordingProxy.targets == [endpoint + "/"]


# --------------------------------------------------------------------------- HelpSteer2

def helpsteer2_rows(prompts):
    """Rows with HelpSteer2-binarized's columns, one per prompt."""
    return {"prompt": prompts,
            "chosen": [f"good answer {i}" for i in range(len(prompts))],
            "rejected": [f"poor answer {i}" for i in range(len(prompts))],
            "chosen_score": [3.5] * len(prompts), "rejected_score": [1.0] * len(prompts)}


@pytest.fixture
def fake_load_dataset(monkeypatch):
    """`datasets.load_dataset` replaced: records its calls, returns a small in-memory HelpSteer2."""
    import datasets

    multi_turn = ("What is a prime number?\n<extra_id_1>Assistant\nA number with exactly two divisors."
                  "\n<extra_id_1>User\nIs 1 one?")
    ds = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(helpsteer2_rows([multi_turn, "Name a colour.", "Say hi."])),
        "validation": datasets.Dataset.from_dict(helpsteer2_rows(["Count to three."])),
    })
    calls = []

    def load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        return ds

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(data, "hub_available", lambda: True)
    return calls


def test_helpsteer2_from_the_hub_is_normalised_at_the_pinned_revision(fake_load_dataset, monkeypatch):
    monkeypatch.delenv(data.DATA_REVISION_ENV, raising=False)
    d = data.load_preference_data(config.DataConfig(), "auto")
    assert d.source == "hub:juyoungml/HelpSteer2-binarized"
    assert fake_load_dataset == [("juyoungml/HelpSteer2-binarized", {"revision": data.HELPSTEER2_REVISION})]
    assert (len(d.train), len(d.validation), d.n_dropped) == (3, 1, 0)
    first = d.train[0]
    assert first.prompt == ({"role": "user", "content": "What is a prime number?"},
                            {"role": "assistant", "content": "A number with exactly two divisors."},
                            {"role": "user", "content": "Is 1 one?"})
    assert (first.chosen, first.rejected, first.source) == ("good answer 0", "poor answer 0", "helpsteer2")
    assert d.validation[0].prompt == ({"role": "user", "content": "Count to three."},)


def test_data_revision_can_be_set_by_the_environment(fake_load_dataset, monkeypatch):
    monkeypatch.setenv(data.DATA_REVISION_ENV, "0123abcd")
    data.load_preference_data(config.DataConfig(), "hub")
    assert fake_load_dataset[0][1] == {"revision": "0123abcd"}


def hand_made_hh_pairs():
    return [data.PreferencePair(({"role": "user", "content": f"question {i}"},), f"yes {i}", f"no {i}", "hh-rlhf")
            for i in range(4)]


@pytest.fixture
def failing_load_dataset(monkeypatch):
    """`datasets.load_dataset` raising the exception set on the returned list's first element; the offline
    HH-RLHF data replaced by four hand-made pairs."""
    import datasets

    raised = []

    def load_dataset(path, **kwargs):
        raise raised[0]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(data, "hub_available", lambda: True)
    monkeypatch.setattr(data, "load_hh_rlhf", lambda: (hand_made_hh_pairs(), data.Counter()))
    return raised


def hub_http_error(status=503):
    url = f"{MIRROR}/api/datasets/juyoungml/HelpSteer2-binarized"
    return HfHubHTTPError(f"{status} Server Error for url: {url}",
                          response=httpx.Response(status, request=httpx.Request("GET", url)))


@pytest.mark.parametrize("error", [
    ConnectionError("Couldn't reach 'juyoungml/HelpSteer2-binarized' on the Hub (LocalEntryNotFoundError)"),
    httpx.ConnectTimeout("timed out"),
    hub_http_error(),
])
def test_a_hub_failure_falls_back_to_offline_data_and_names_the_error(failing_load_dataset, error, capsys):
    failing_load_dataset.append(error)
    d = data.load_preference_data(config.DataConfig(n_validation=1), "auto")
    assert d.source == "offline:hh-rlhf-helpful-test"
    assert sorted(p.chosen for p in d.train + d.validation) == [f"yes {i}" for i in range(4)]
    out = capsys.readouterr().out
    assert hub.short_error(error) in out and type(error).__name__ in out
    assert "offline HH-RLHF" in out and "HF_HUB_OFFLINE=1" in out


def test_a_bug_while_loading_helpsteer2_propagates(failing_load_dataset):
    failing_load_dataset.append(KeyError("validation"))
    with pytest.raises(KeyError, match="validation"):
        data.load_preference_data(config.DataConfig(n_validation=1), "auto")


def test_a_parsing_bug_propagates(fake_load_dataset, monkeypatch):
    def broken(row):
        raise TypeError("a bug in the row parser")

    monkeypatch.setattr(data, "helpsteer2_pair_from_row", broken)
    with pytest.raises(TypeError, match="row parser"):
        data.load_preference_data(config.DataConfig(), "auto")


def test_source_hub_reraises_a_hub_failure(failing_load_dataset):
    failing_load_dataset.append(ConnectionError("Couldn't reach the Hub"))
    with pytest.raises(ConnectionError, match="Couldn't reach"):
        data.load_preference_data(config.DataConfig(n_validation=1), "hub")


def test_auto_with_hf_hub_offline_never_calls_the_hub(monkeypatch):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset called offline"))
    monkeypatch.setattr(data, "load_hh_rlhf", lambda: (hand_made_hh_pairs(), data.Counter()))
    assert data.load_preference_data(config.DataConfig(n_validation=1), "auto").source.startswith("offline:")


# ------------------------------------------------------------------------------ the model

@pytest.fixture
def fake_snapshot_download(monkeypatch, tmp_path):
    """`huggingface_hub.snapshot_download` replaced: records its calls, returns a path or raises what is set
    on the returned list's first element; the offline weights replaced by `tmp_path` (no GGUF conversion)."""
    import huggingface_hub

    calls, raised = [], []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if raised:
            raise raised[0]
        return "/hub/cache/smollm2"

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(models, "hub_available", lambda: True)
    monkeypatch.setattr(models, "offline_model_dir", lambda: tmp_path)
    for var in (config.MODEL_ENV, models.MODEL_REVISION_ENV, models.MODEL_SOURCE_ENV):
        monkeypatch.delenv(var, raising=False)
    return calls, raised


def test_model_from_the_hub_at_the_pinned_revision(fake_snapshot_download):
    calls, _ = fake_snapshot_download
    assert models.locate_model() == ("/hub/cache/smollm2", "hub")
    assert calls[0][0] == models.MODEL_ID
    assert calls[0][1]["revision"] == models.SMOLLM2_135M_REVISION
    assert len(models.SMOLLM2_135M_REVISION) == 40


def test_model_revision_of_another_model_is_main_or_the_environment(fake_snapshot_download, monkeypatch):
    calls, _ = fake_snapshot_download
    monkeypatch.setenv(config.MODEL_ENV, "HuggingFaceTB/SmolLM2-360M-Instruct")
    models.locate_model()
    monkeypatch.setenv(models.MODEL_REVISION_ENV, "v2")
    models.locate_model()
    assert [(name, kw["revision"]) for name, kw in calls] == [("HuggingFaceTB/SmolLM2-360M-Instruct", "main"),
                                                              ("HuggingFaceTB/SmolLM2-360M-Instruct", "v2")]


def test_a_hub_http_error_falls_back_to_the_offline_weights(fake_snapshot_download, tmp_path, capsys):
    fake_snapshot_download[1].append(hub_http_error(504))
    assert models.locate_model() == (str(tmp_path), "gguf-q4_1")
    out = capsys.readouterr().out
    assert "HfHubHTTPError: 504 Server Error" in out and "offline GGUF" in out and "HF_HUB_OFFLINE=1" in out


def test_another_model_without_the_hub_is_refused_with_the_hub_error(fake_snapshot_download, monkeypatch):
    fake_snapshot_download[1].append(httpx.ConnectError("[Errno 101] Network is unreachable"))
    monkeypatch.setenv(config.MODEL_ENV, "HuggingFaceTB/SmolLM2-360M-Instruct")
    with pytest.raises(models.ModelUnavailableError) as err:
        models.locate_model()
    assert "ConnectError: [Errno 101] Network is unreachable" in str(err.value)
    assert "SmolLM2-360M-Instruct" in str(err.value) and "HF_ENDPOINT" in str(err.value)


def test_a_bug_while_locating_the_model_propagates(fake_snapshot_download):
    fake_snapshot_download[1].append(TypeError("snapshot_download() got an unexpected keyword argument"))
    with pytest.raises(TypeError, match="unexpected keyword"):
        models.locate_model()


def test_the_model_source_setting_picks_the_weights(fake_snapshot_download, tmp_path, monkeypatch):
    calls, raised = fake_snapshot_download
    monkeypatch.setenv(models.MODEL_SOURCE_ENV, "offline")
    assert models.locate_model() == (str(tmp_path), "gguf-q4_1") and calls == []  # the hub is not asked
    monkeypatch.setenv(models.MODEL_SOURCE_ENV, "hub")
    assert models.locate_model()[1] == "hub"
    raised.append(httpx.ConnectError("[Errno 101] Network is unreachable"))
    with pytest.raises(models.ModelUnavailableError, match=r"from the hub \(\$ALIGNLIB_MODEL_SOURCE=hub\).*ConnectError"):
        models.locate_model()  # asked for the hub: no silent fallback
    monkeypatch.setenv(models.MODEL_SOURCE_ENV, "gguf")
    with pytest.raises(ValueError, match="auto, hub or offline"):
        models.locate_model()


def test_a_run_follows_the_weights_its_reward_model_learned_on(monkeypatch, capsys):
    monkeypatch.setenv(models.MODEL_SOURCE_ENV, "")  # unset, and restored to what it was after the test
    models.follow_weights_of({"model_source": "gguf-q4_1"})  # the published reward models
    assert models.model_source_setting() == "offline" and "'gguf-q4_1' weights" in capsys.readouterr().out
    monkeypatch.setenv(models.MODEL_SOURCE_ENV, "hub")  # the user's own choice stays
    models.follow_weights_of({"model_source": "gguf-q4_1"})
    assert models.model_source_setting() == "hub"
    monkeypatch.setenv(models.MODEL_SOURCE_ENV, "")
    models.follow_weights_of({"model_source": "tiny-random"})  # a source no setting gives: left alone
    assert models.model_source_setting() == "auto"
