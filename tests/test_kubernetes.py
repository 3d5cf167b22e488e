"""packaging/kubernetes: the manifests pass kubernetes-validate (strict), hold to least privilege
and agree with each other and with storesync's own config loader; and a real `storesync daemon`
follows the kubelet's atomic update of a mounted ConfigMap, swap after swap."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from storesync.config import load_config
from test_daemon import Daemon, bundle, daemons, keys, state_dir, until, write_config  # noqa: F401 - fixtures

PACKAGING = Path(__file__).resolve().parents[1] / "packaging" / "kubernetes"
KUBERNETES = "1.34.0"  # a recent release whose schemas kubernetes-validate ships
CRDS = {"Bundle"}  # trust-manager's: kubernetes-validate has no schema for custom resources


def manifests() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in sorted(PACKAGING.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def kind(name: str) -> dict:
    return next(doc for _, doc in manifests() if doc["kind"] == name)


# --- the manifests ----------------------------------------------------------------------------


def test_every_manifest_passes_kubernetes_validate_in_strict_mode():
    skipped = []
    for name, doc in manifests():
        try:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            skipped.append(doc["kind"])  # a custom resource: checked by the test below
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")
    assert set(skipped) == CRDS
    assert {"DaemonSet", "ConfigMap", "Namespace", "Bundle"} <= {doc["kind"] for _, doc in manifests()}


def test_the_validator_rejects_a_misspelt_field():
    """The oracle is live: strict mode refuses what a typo makes (the kubelet would ignore it)."""
    daemonset = kind("DaemonSet")
    daemonset["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES, strict=True)


def test_the_bundle_targets_the_configmap_the_daemonset_mounts():
    bundle_, daemonset = kind("Bundle"), kind("DaemonSet")
    assert bundle_["apiVersion"] == "trust.cert-manager.io/v1alpha1"
    key = bundle_["spec"]["target"]["configMap"]["key"]
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    assert volumes["bundle"]["configMap"]["name"] == bundle_["metadata"]["name"]  # trust-manager names it so
    selector = bundle_["spec"]["target"]["namespaceSelector"]["matchLabels"]
    assert selector == {"kubernetes.io/metadata.name": daemonset["metadata"]["namespace"]}
    config = load_config_from_configmap()
    mounts = {m["name"]: m for m in daemonset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    source = config.profiles["cluster-roots"].stores[0].spec
    assert source == f"pem:{mounts['bundle']['mountPath']}/{key}"


def load_config_from_configmap():
    """The config ConfigMap's storesync.toml, through storesync's own loader."""
    configmap = next(doc for _, doc in manifests()
                     if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "storesync-config")
    with tempfile.TemporaryDirectory() as where:
        path = Path(where) / "storesync.toml"
        path.write_text(configmap["data"]["storesync.toml"])
        return load_config(path)


def test_the_daemonset_holds_to_least_privilege():
    daemonset = kind("DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) <= {"CHOWN", "DAC_OVERRIDE", "FOWNER"}
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False and not pod.get("hostNetwork") and not pod.get("hostPID")
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    # Its priority class is one of ours: system-* classes are often admitted only in kube-system.
    assert pod["priorityClassName"] == kind("PriorityClass")["metadata"]["name"]
    # The liveness probe asks the metrics server the daemon is told to start.
    args = container["args"]
    port = int(args[args.index("--metrics") + 1].rpartition(":")[2])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[container["livenessProbe"]["httpGet"]["port"]] == port
    # A ConfigMap is followed only when mounted whole (a subPath mount never sees an update).
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert not any("subPath" in m for m in mounts.values())
    assert mounts["config"]["readOnly"] and mounts["bundle"]["readOnly"]
    # Every node path is mounted where it is on the node, so the config names the node's paths;
    # the state dir too (backups and the last good policy survive a restart).
    volumes = {v["name"]: v for v in pod["volumes"]}
    for name, volume in volumes.items():
        if "hostPath" in volume:
            assert mounts[name]["mountPath"] == volume["hostPath"]["path"], name
    env = {e["name"]: e["value"] for e in container["env"]}
    assert "hostPath" in volumes[next(n for n, m in mounts.items() if m["mountPath"] == env["STORESYNC_STATE_DIR"])]
    # Every store of the config lies on a mounted, writable path.
    config = load_config_from_configmap()
    writable = [m["mountPath"] for m in mounts.values() if not m.get("readOnly")]
    for ref in config.profiles["cluster-roots"].stores[1:]:
        path = ref.spec.partition(":")[2]
        assert any(path == w or path.startswith(w + "/") for w in writable), path


# --- the kubelet's atomic update of a ConfigMap volume ----------------------------------------


def kubelet_write(mount: Path, payload: dict[str, bytes], pause=None) -> Path:
    """What the kubelet's AtomicWriter.Write (pkg/volume/util/atomic_writer.go) does to a
    ConfigMap volume, in its order: a new `..YYYY_MM_DD_HH_MM_SS.NNN` directory (0755) with the
    payload; the user-visible links `KEY -> ..data/KEY` where missing; `..data_tmp` pointing at
    the new directory, renamed over `..data`; visible links of keys no longer present removed;
    the previous directory removed. `pause(step)` is called between steps (a half-state)."""
    pause = pause or (lambda step: None)
    stamp = datetime.now(timezone.utc).strftime("..%Y_%m_%d_%H_%M_%S.")
    new = Path(tempfile.mkdtemp(prefix=stamp, dir=mount))
    os.chmod(new, 0o755)
    for key, data in payload.items():
        (new / key).write_bytes(data)
        os.chmod(new / key, 0o644)
    pause("payload written")
    for key in payload:
        if not os.path.islink(mount / key):
            os.symlink(os.path.join("..data", key), mount / key)
    old = os.readlink(mount / "..data") if os.path.islink(mount / "..data") else None
    os.symlink(new.name, mount / "..data_tmp")
    pause("..data_tmp made")
    os.rename(mount / "..data_tmp", mount / "..data")
    for entry in os.listdir(mount):
        if not entry.startswith("..") and entry not in payload:
            os.remove(mount / entry)
    pause("renamed")
    if old:
        shutil.rmtree(mount / old)
    return new


def test_the_simulated_kubelet_makes_the_layout_a_pod_sees(tmp_path):
    mount = tmp_path / "bundle"
    mount.mkdir()
    first = kubelet_write(mount, {"bundle.pem": b"one"})
    assert os.readlink(mount / "bundle.pem") == "..data/bundle.pem"
    assert os.readlink(mount / "..data") == first.name and first.name.startswith("..20")
    second = kubelet_write(mount, {"bundle.pem": b"two"})
    assert (mount / "bundle.pem").read_bytes() == b"two" and not first.exists()
    assert sorted(os.listdir(mount)) == sorted([second.name, "..data", "bundle.pem"])


def test_the_daemon_follows_configmap_swaps_and_ignores_half_states(pki, tmp_path, daemons):
    cas = [pki.ca(f"ConfigMap Root {n}") for n in range(6)]
    mount, target = tmp_path / "bundle", tmp_path / "node" / "ca-certificates.crt"
    mount.mkdir()
    target.parent.mkdir()
    kubelet_write(mount, {"bundle.pem": bundle(*cas[:2])})
    config = write_config(tmp_path / "s.toml", {"cluster": [f"pem:{mount}/bundle.pem", f"pem:{target}"]},
                          mode="mirror")
    daemon = Daemon(tmp_path, config)
    daemons.append(daemon)
    daemon.started()
    until(lambda: keys(f"pem:{target}") == keys(f"pem:{mount}/bundle.pem"), what="the first reconcile")

    def held(step):
        # Until the rename the mount still shows the old bundle: nothing may change.
        if step == "renamed":
            return
        before = target.read_bytes()
        time.sleep(0.6)
        assert target.read_bytes() == before, f"the daemon acted on a half-state ({step})"

    # Each swap removes at most one root: more would be held back by the removal guard.
    for n, chosen in enumerate([cas[:3], cas[1:4], cas[1:6], cas[2:6]]):
        want = bundle(*chosen)
        kubelet_write(mount, {"bundle.pem": want}, pause=held if n < 2 else None)
        try:
            until(lambda: len(keys(f"pem:{target}")) == len(chosen)
                  and keys(f"pem:{target}") == keys(f"pem:{mount}/bundle.pem"), what=f"swap {n + 1} to reach the target")
        except pytest.fail.Exception:
            pytest.fail(f"swap {n + 1} did not reach the target; log:\n{daemon.log_path.read_text()}")
        daemon.settled()
    assert len(daemon.events("written")) == 5  # the start and one per swap
    assert daemon.stop() == 0
