"""DS mkfs: an empty datablock `one-image-<id>` of SIZE MB, formatted with the image's FS when it
has one (no shell ever sees FS or FORMAT: BUG-8/23). Prints the SOURCE.

argv: <b64 DS_DRIVER_ACTION_DATA> <image_id> | - <image_id> | <image_id> (data on stdin)
"""
import sys

from linstor_un import holders, host_ops, images, names
from linstor_un.errors import DriverError
from linstor_un.one_input import DsRequest
from linstor_un.placement import scheduler


def main(act, request: DsRequest):
    xml, image_id = request.xml, request.id
    msg = images.ImageMessage.parse(xml)
    settings = act.datastore_settings(msg)
    res = names.image(image_id)
    fmt = (msg.image_text("FORMAT") or msg.image_text("FSTYPE") or "raw").lower()
    fs = msg.image_text("FS").lower()
    if fmt == "save_as":                    # 5.x save-as: TM cpds creates the volume
        sys.stdout.write(names.source(res) + "\n")
        return
    if fmt not in ("raw", "qcow2") and fmt in host_ops.FILESYSTEMS:
        fs, fmt = fmt, "raw"                # 5.x: FSTYPE named the filesystem
    if fmt not in ("raw", "qcow2", "swap"):
        raise DriverError(f"unsupported image format '{fmt}'")
    if fs and fs not in host_ops.FILESYSTEMS:
        raise DriverError(f"unsupported filesystem '{fs}' (supported: {', '.join(sorted(host_ops.FILESYSTEMS))})")
    if msg.size_mb <= 0:
        raise DriverError("the image has no SIZE")
    ds = act.context(settings)
    owner = images.owner(msg, image_id)
    if images.already_made(ds.api, ds.api.resource_definition(res), owner, act.report):
        act.report.info(f"{res} was made already (retry)")
        sys.stdout.write(names.source(res) + "\n")
        return
    with ds.new_volume(res, owner, "mkfs") as new:
        scheduler(ds.api, settings.placement, act.report).create(res, msg.size_mb * 1024, props=new.props)
        if fs or fmt in ("qcow2", "swap"):
            bridge, replicas = holders.pick_bridge(ds.api, settings.bridge_list, image_id, res)
            with ds.attacher.borrowed(bridge, res, replicas) as device:
                host = act.hosts[bridge]
                if fmt == "swap":
                    host_ops.mkswap(host, device)
                elif fs:
                    host_ops.mkfs(host, device, fs)
                else:
                    host_ops.qcow2(host, device, msg.size_mb)
        new.complete()
    sys.stdout.write(names.source(res) + "\n")
