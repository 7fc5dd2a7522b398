"""Drives casegate with the real Python clients its users run, unmodified.

usage: drive.py CLIENT ACTION BASE_URL TOKEN ARG...

  tapi create CASE FILE NAME MIME [COMMENT]   CaseFilesAPI.create
  tapi list CASE [PER_PAGE PAGE]              CaseFilesAPI.list
  tapi get|info|download|delete CASE ID       CaseFilesAPI.get / info / download / delete
  kibana-py add_file CASE FILE NAME MIME      cases.add_file
  kibana-py get CASE                          cases.get
  kibana-py get_comments CASE                 cases.get_comments
  kibana-py get_comment|delete_comment CASE COMMENT_ID

Over HTTPS, CASEGATE_CA names the certificate authority kibana-py is told to trust
(`ca_certs`); tapi's httpx reads SSL_CERT_FILE itself.

Prints one JSON object: {"status": int, "body": <parsed JSON or text>, "headers": {...}};
a body that is not JSON (a download) is given as {"sha256": hex, "len": n}.

tapi always calls https://{tenant}.tines.com/api/...; the only thing changed here is
where that request goes (casegate on 127.0.0.1), by wrapping the httpx function tapi
calls. Everything tapi puts on the wire (its JSON with nulls, its headers) is its own.
"""
import base64
import hashlib
import json
import os
import sys


def digest(body):
    if isinstance(body, str):
        body = body.encode("utf-8")
    return {"sha256": hashlib.sha256(body).hexdigest(), "len": len(body)}


def case_arg(case_id):
    return int(case_id) if case_id.isdigit() else case_id


def run_tapi(base, token, action, args):
    import importlib

    from tapi.api.case.files import CaseFilesAPI

    tc = importlib.import_module("tapi.client.client")
    original = tc.request

    def to_casegate(method, url, **kwargs):
        path = url.split(".tines.com", 1)[1]
        return original(method, base + path, **kwargs)

    tc.request = to_casegate
    api = CaseFilesAPI("tenant", token)
    if action == "create":
        case_id, path, name, _mime = args[:4]
        comment = args[4] if len(args) > 4 else None
        with open(path, "rb") as f:
            data = f.read()
        res = api.create(
            case_id=case_arg(case_id),
            filename=name,
            file_contents=base64.b64encode(data).decode("ascii"),
            value=comment,
        )
    elif action == "list":
        kwargs = {}
        if len(args) > 1:
            kwargs = {"per_page": int(args[1]), "page": int(args[2])}
        res = api.list(case_id=case_arg(args[0]), **kwargs)
    else:
        call = {"get": api.get, "info": api.info, "download": api.download, "delete": api.delete}
        res = call[action](case_id=case_arg(args[0]), file_id=case_arg(args[1]))
    body = res["body"]
    if action == "download":
        body = digest(body)
    return {"status": res["status_code"], "body": body, "headers": res["headers"]}


def run_kibana(base, token, action, args):
    from kibana import Kibana
    from kibana.exceptions import ApiError

    # CASEGATE_CA: the certificate authority to trust over HTTPS, given as a kibana-py
    # user gives it (tapi has no such option; httpx, under it, reads SSL_CERT_FILE).
    tls = {"ca_certs": os.environ["CASEGATE_CA"]} if os.environ.get("CASEGATE_CA") else {}
    client = Kibana(base, api_key=token, max_retries=0, **tls)
    try:
        if action == "add_file":
            case_id, path, name, mime = args[:4]
            with open(path, "rb") as f:
                data = f.read()
            resp = client.cases.add_file(case_id=case_id, file=data, filename=name, mime_type=mime)
        elif action == "get":
            resp = client.cases.get(case_id=args[0])
        elif action == "get_comments":
            resp = client.cases.get_comments(case_id=args[0])
        elif action == "get_comment":
            resp = client.cases.get_comment(case_id=args[0], comment_id=args[1])
        elif action == "delete_comment":
            resp = client.cases.delete_comment(case_id=args[0], comment_id=args[1])
        else:
            raise SystemExit(f"unknown kibana-py action {action}")
        return {"status": resp.meta.status, "body": resp.body, "headers": dict(resp.meta.headers)}
    except ApiError as e:
        return {"status": e.meta.status if hasattr(e, "meta") else getattr(e, "status_code", 0),
                "body": getattr(e, "body", str(e)), "headers": {}}


def main():
    client, action, base, token = sys.argv[1:5]
    args = sys.argv[5:]
    run = {"tapi": run_tapi, "kibana-py": run_kibana}[client]
    print(json.dumps(run(base, token, action, args), default=str))


if __name__ == "__main__":
    main()
