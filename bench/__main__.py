"""``make bench``: run every benchmark in turn."""

from __future__ import annotations

from bench import store_rss, store_upload

if __name__ == "__main__":
    print("== storage: encrypted streaming store vs raw put_object ==")
    store_upload.run()
    print("== storage: memory while storing 1 GiB ==")
    store_rss.run()
