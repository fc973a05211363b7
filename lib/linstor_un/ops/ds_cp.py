"""DS cp: import an image into a new LINSTOR volume `one-image-<id>`, streamed from the front-end
(a local file or http/https; other schemes through OpenNebula's downloader.sh) to a bridge host,
checked against MD5/SHA1, decompressed, converted to raw with qemu-img when it is not raw.
Prints `SOURCE raw`.

argv: <b64 DS_DRIVER_ACTION_DATA> <image_id> | - <image_id> | <image_id> (data on stdin)
"""
import os
import sys

from linstor_un import downloads, holders, image_source, images, names
from linstor_un.errors import DriverError
from linstor_un.linstor_api import thin_only
from linstor_un.one_input import DsRequest
from linstor_un.placement import scheduler


def main(act, request: DsRequest):
    xml, image_id = request.xml, request.id
    msg = images.ImageMessage.parse(xml)
    settings = act.datastore_settings(msg)
    path = msg.image_text("PATH")
    if not path:
        raise DriverError("no image PATH to import")
    md5, sha1 = msg.image_text("TEMPLATE/MD5"), msg.image_text("TEMPLATE/SHA1")
    url = source_url(act, path, settings.imports, xml)
    res = names.image(image_id)
    owner = images.owner(msg, image_id)
    ds = act.context(settings)
    api = ds.api
    if images.already_made(api, api.resource_definition(res), owner, act.report):
        act.report.info(f"{res} was imported already (retry)")
        sys.stdout.write(f"{names.source(res)} raw\n")
        return

    src = image_source.Source(url, settings.imports.no_decompress, settings.imports.limit_transfer_bw, md5=bool(md5),
                        sha1=bool(sha1))
    try:
        size = max(msg.size_mb << 20, image_source.qcow2_virtual_size(src.head) or 0,
                   src.length if (src.format == "raw" and not src.compressed and src.length) else 0)
        if size <= 0:
            raise DriverError(f"unknown size of {path}: register the image with a SIZE")
        with ds.new_volume(res, owner, "cp") as new:
            scheduler(api, settings.placement, act.report).create(res, (size + 1023) // 1024, props=new.props)
            bridge, replicas = holders.pick_bridge(api, settings.bridge_list, image_id, res)
            with ds.attacher.borrowed(bridge, res, replicas) as device:
                act.report.info(f"importing {path} ({src.format}) to {bridge}:{device}")
                image_source.write(act.hosts[bridge], src, device, settings.staging_dir, thin_only(replicas),
                                   md5, sha1)
            new.complete()
        if src.from_kept:
            downloads.forget(url)     # the image is in LINSTOR: stat's copy of the download goes
    finally:
        src.close()
        if url != path:               # downloaded through downloader.sh into a temporary file
            os.unlink(url)
    sys.stdout.write(f"{names.source(res)} raw\n")


def source_url(act, path, imports, xml):
    """A local path (subject to RESTRICTED_DIRS/SAFE_DIRS) or http(s) URL; anything else through
    OpenNebula's downloader.sh into a local temporary file."""
    if path.startswith(("http://", "https://")):
        return path
    if "://" not in path:
        if image_source.restricted(path, imports, os.environ.get("HOME", "/var/lib/one")):
            raise DriverError(f"Not allowed to copy image file {path}")
        if not os.path.isfile(path):
            raise DriverError(f"image file {path} not found on the front-end")
        return path
    return image_source.download(act.remotes, path, xml)
