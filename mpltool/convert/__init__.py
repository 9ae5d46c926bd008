"""Frozen GraphDef -> Ascend .om: atc discovery (atc.py), soc_version (soc.py), offline pre-check
(precheck.py) and the `convert` stage that records it all in the manifest (stage.py)."""
