"""Datastore settings and linstor_un.conf: every bad value is one error naming the attribute,
raised while parsing (before an action creates anything); good values come out typed."""
from __future__ import annotations

import pytest

from linstor_un.errors import DriverError
from linstor_un.settings import DatastoreSettings, command_timeout, oned_deadline, read_conf

BASE = {"RESOURCE_GROUP": "one_rg"}


def parse(conf=None, **attrs):
    return DatastoreSettings.parse(100, {**BASE, **attrs}, conf or {})


@pytest.mark.parametrize("attr,value,says", [
    ("LS_CONTROLLERS", "http://ctl;rm -rf /", "LS_CONTROLLERS: 'http://ctl;rm' is not a controller address"),
    ("LS_CERTFILE", "/nonexistent/cert.pem", "LS_CERTFILE: file '/nonexistent/cert.pem' not found"),
    ("CLONE_MODE", "rsync", "'rsync' is not valid 'CLONE_MODE'"),
    ("DO_NOT_PLACE_WITH_REGEX", "one-(", "DO_NOT_PLACE_WITH_REGEX: invalid regex"),
    ("LAYER_LIST", "drbd,zram", "LAYER_LIST: unknown layer 'ZRAM'"),
    ("PROVIDERS", "lvm,tape", "PROVIDERS: unknown provider 'TAPE'"),
    ("REPLICAS_ON_SAME", "Aux/ra;ck", "REPLICAS_ON_SAME: 'Aux/ra;ck' is not a property name"),
    ("RESOURCE_GROUP", "rg_a rg_b", "RESOURCE_GROUP: only one resource group may be given"),
    ("RESOURCE_GROUP", "1x", "RESOURCE_GROUP: '1x' is not a valid LINSTOR name"),
    ("NODE_LIST", "node1 -oProxy", "NODE_LIST: '-oProxy' is not a valid LINSTOR name"),
    ("REPLICA_COUNT", "17", "REPLICA_COUNT: '17' is not a replica count (1-16)"),
    ("REPLICA_COUNT", "²", "REPLICA_COUNT: '²' is not a replica count (1-16)"),
    ("REPLICA_COUNT", "٣", "REPLICA_COUNT: '٣' is not a replica count (1-16)"),
    ("AUTO_PLACE", "two", "AUTO_PLACE: 'two' is not a replica count (1-16)"),
    ("CHECKPOINT_REPLICA_COUNT", "0", "CHECKPOINT_REPLICA_COUNT: '0' is not a replica count"),
    ("PREFER_NODE", "maybe", "PREFER_NODE: 'maybe' is not yes or no"),
    ("ENCRYPTION", "on", "ENCRYPTION: 'on' is not yes or no"),
    ("STAGING_DIR", "tmp", "STAGING_DIR: 'tmp' is not an absolute path"),
    ("BRIDGE_LIST", "node1 -oProxyCommand=x", "BRIDGE_LIST: '-oProxyCommand=x' is not a host name"),
    ("NO_DECOMPRESS", "perhaps", "NO_DECOMPRESS: 'perhaps' is not yes or no"),
    ("LIMIT_TRANSFER_BW", "10M/s", "LIMIT_TRANSFER_BW: '10M/s' is not a number of bytes per second"),
    ("RESTRICTED_DIRS", "/etc relative", "RESTRICTED_DIRS: 'relative' is not an absolute path"),
    ("SAFE_DIRS", "~/images", "SAFE_DIRS: '~/images' is not an absolute path"),
])
def test_each_bad_attribute_is_one_error_naming_it(attr, value, says):
    with pytest.raises(DriverError) as err:
        parse(**{attr: value})
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def test_certificate_and_key_go_together(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(DriverError, match="LS_CERTFILE and LS_KEYFILE must be set together"):
        parse(LS_CERTFILE=str(cert))


@pytest.mark.parametrize("conf,says", [
    ({"DD_BLOCK_SIZE": "64q"}, "linstor_un.conf DD_BLOCK_SIZE: '64q' is not a dd block size"),
    ({"DD_BLOCK_SIZE": "0"}, "DD_BLOCK_SIZE: '0'"),
])
def test_bad_driver_wide_settings(conf, says):
    with pytest.raises(DriverError, match=says):
        parse(conf)


@pytest.mark.parametrize("reader,key", [(command_timeout, "SSH_COMMAND_TIMEOUT"), (oned_deadline, "ONED_DEADLINE")])
@pytest.mark.parametrize("value", ["soon", "-1", "0", "inf", "1e9", "٣", "nan"])
def test_seconds_settings(reader, key, value):
    with pytest.raises(DriverError, match=f"linstor_un.conf {key}: '{value}' is not a number of seconds"):
        reader({key: value}, 30)
    assert reader({}, 30) == 30 and reader({key: "2.5"}, 30) == 2.5


def test_placement_must_be_decidable():
    s = DatastoreSettings.parse(100, {"NODE_LIST": "node1 node2"}, {})
    with pytest.raises(DriverError, match="missing 'STORAGE_POOL'"):
        s.placement.require()
    s = DatastoreSettings.parse(100, {}, {})
    with pytest.raises(DriverError, match="missing 'RESOURCE_GROUP', 'NODE_LIST' or 'REPLICA_COUNT'"):
        s.placement.require()


def test_good_values_come_out_typed():
    s = parse({"DD_BLOCK_SIZE": "1M", "STAGING_DIR": "/srv/stage"}, NODE_LIST="node1,node2 node3",
              REPLICA_COUNT="2", LAYER_LIST="drbd storage", PREFER_NODE="yes", CHECKPOINT_AUTO_PLACE="1",
              NO_DECOMPRESS="yes", LIMIT_TRANSFER_BW="1048576", SAFE_DIRS="/srv/images /mnt",
              CLONE_MODE="SNAPSHOT")
    assert s.placement.node_list == ["node1", "node2", "node3"] and s.placement.replica_count == 2
    assert s.placement.layer_list == ["DRBD", "STORAGE"] and s.placement.prefer_node
    assert s.checkpoint_placement.replica_count == 1 and not s.checkpoint_placement.prefer_node
    assert s.dd_block_size == "1M" and s.staging_dir == "/srv/stage" and s.clone_mode == "snapshot"
    assert s.imports.no_decompress and s.imports.limit_transfer_bw == 1 << 20
    assert s.imports.safe_dirs == ["/srv/images", "/mnt"]
    d = parse()
    assert d.dd_block_size == "64k" and d.imports.limit_transfer_bw == 0 and d.connection.controllers == ["localhost"]


def test_the_template_wins_over_the_conf_file_for_staging():
    assert parse({"STAGING_DIR": "/a"}, STAGING_DIR="/b").staging_dir == "/b"
    assert parse({"STAGING_DIR": "/a"}).staging_dir == "/a"


def test_read_conf_takes_values_literally(tmp_path):
    conf = tmp_path / "linstor_un.conf"
    conf.write_text('export SSH_COMMAND_TIMEOUT="${SSH_COMMAND_TIMEOUT:-90}"\n'
                    "DD_BLOCK_SIZE=$(reboot)\n# LS_CONTROLLERS=x\nBROKEN='unterminated\n")
    assert read_conf(conf) == {"SSH_COMMAND_TIMEOUT": "90", "DD_BLOCK_SIZE": "$(reboot)"}
    assert read_conf(tmp_path / "missing.conf") == {}
