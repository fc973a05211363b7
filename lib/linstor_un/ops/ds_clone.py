"""DS clone: a new image `one-image-<id>` from an existing one, copied by LINSTOR itself
(resource-definition clone), without the source's OpenNebula properties. Prints the SOURCE.

Before LINSTOR 1.32 a clone is born without properties (they follow it): an action killed in
between would leave a copy nobody can prove is this image's. There, or when LINSTOR's clone fails
(from 1.31 it refuses one while a disk of the source is offline), the new volume is made marked
and the bytes are copied through a bridge host.

argv: <b64 DS_DRIVER_ACTION_DATA> <image_id> | - <image_id> | <image_id> (data on stdin)
"""
import sys

from linstor_un import holders, images, names, ownership
from linstor_un.context import Datastore
from linstor_un.errors import DriverError
from linstor_un.linstor_api import thin_only
from linstor_un.one_input import DsRequest
from linstor_un.placement import scheduler


def main(act, request: DsRequest):
    xml, image_id = request.xml, request.id
    msg = images.ImageMessage.parse(xml)
    ds = act.context(act.datastore_settings(msg))
    settings, api = ds.settings, ds.api
    src = names.from_source(msg.image_text("PATH"))
    dst = names.image(image_id)
    owner = images.owner(msg, image_id)
    found = api.definitions(src, dst)
    source = found[src]
    if images.already_made(api, found[dst], owner, act.report):
        act.report.info(f"{dst} was cloned already (retry)")
        sys.stdout.write(names.source(dst) + "\n")
        return
    if source is None:
        raise DriverError(f"image resource {src} does not exist in LINSTOR")
    why_not = api.clone_refusal
    with ds.new_volume(dst, owner, "clone") as new:
        if why_not is None:
            try:
                api.copy_definition(source, dst, settings.placement.resource_group, msg.size_mb * 1024, new.props)
            except DriverError as err:          # (a disk of the image offline, a provider it cannot copy...)
                why_not = f"LINSTOR's clone failed: {err}"
                left = api.resource_definition(dst)
                if left is not None:            # what it left, unfinished: gone (someone else's: refused)
                    ownership.may_reuse(api, left, owner, act.report)
        if why_not is not None:
            copy_through_bridge(act, ds, source, dst, max(msg.size_mb * 1024, source.size_kib), new.props,
                                image_id, why_not)
        new.complete()
    sys.stdout.write(names.source(dst) + "\n")


def copy_through_bridge(act, ds: Datastore, source, dst, size_kib, props, image_id, why_not):
    scheduler(ds.api, ds.settings.placement, act.report).create(dst, size_kib, props=props)
    bridge, replicas = holders.pick_bridge(ds.api, ds.settings.bridge_list, image_id, dst)
    act.report.info(f"{dst} copied through {bridge} ({why_not})")
    ds.copy(act.hosts[bridge], source.name, dst, sparse=thin_only(replicas), replicas={dst: replicas})
