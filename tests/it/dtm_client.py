"""Drives DTM's own Python client (PyPI dtmcli, pinned) against the service, for tests/it/dtm.rs.

Reads one JSON scenario from argv[1], runs it through dtmcli exactly as an application would,
and prints one JSON line: {"gid": ..., "ok": true} or {"gid": ..., "ok": false, "error": ...}.
"""

import json
import sys

from dtmcli import msg, saga, tcc, utils


def run_saga(spec, dtm, gid):
    s = saga.Saga(dtm, gid)
    for body, action, compensate in spec["steps"]:
        s.add(body, action, compensate)
    orders = spec.get("orders")
    if orders is not None:
        # dtmcli 1.7.7.0's add_branch_order/set_concurrent use attributes Saga never defines:
        # set them as a user of that release has to.
        s.orders = {}
        s.concurrent = True
        s.set_concurrent()
        for branch, pre in orders.items():
            s.add_branch_order(int(branch), pre)
    for k, v in spec.get("options", {}).items():
        setattr(s.trans_base, k, v)
    s.submit()


def run_tcc(spec, dtm, gid):
    """DTM's TCC as its client drives it: prepare, register and try each branch, submit; an
    error on the way aborts. Answers whether it was submitted."""

    def branches(t):
        for body, try_url, confirm, cancel in spec["branches"]:
            t.call_branch(body, try_url, confirm, cancel)

    return tcc.tcc_global_transaction(dtm, gid, branches) == gid


def run_msg(spec, dtm, gid):
    """DTM's msg: prepare then submit; or prepare only (left prepared); or do_and_submit whose
    local transaction fails with DTMFailureError (the client aborts)."""
    m = msg.Msg(dtm, gid)
    for body, action in spec["steps"]:
        m.add(body, action)
    for k, v in spec.get("options", {}).items():
        setattr(m.trans_base, k, v)
    qp = spec.get("query_prepared")
    if spec["how"] == "submit":
        m.prepare(qp)
        m.submit()
    elif spec["how"] == "prepare":
        m.prepare(qp)
    elif spec["how"] == "rolled_back":

        def busi(_barrier):
            raise utils.DTMFailureError("the local transaction rolled back")

        m.do_and_submit(qp, busi)
    else:
        raise ValueError("unknown msg scenario " + spec["how"])


def main():
    spec = json.loads(sys.argv[1])
    dtm = spec["dtm"]
    gid = spec.get("gid")
    try:
        gid = gid or utils.gen_gid(dtm)
        out = {"gid": gid, "ok": True}
        if spec["kind"] == "saga":
            run_saga(spec, dtm, gid)
        elif spec["kind"] == "msg":
            run_msg(spec, dtm, gid)
        elif spec["kind"] == "tcc":
            out["submitted"] = run_tcc(spec, dtm, gid)
        else:
            raise ValueError("unknown kind " + spec["kind"])
        print(json.dumps(out))
    except utils.DTMFailureError as e:
        print(json.dumps({"gid": gid, "ok": False, "error": "DTMFailureError: %s" % e}))
    except Exception as e:  # what a DTM client raises for any other error answer
        print(json.dumps({"gid": gid, "ok": False, "error": "%s: %s" % (type(e).__name__, e)}))


main()
