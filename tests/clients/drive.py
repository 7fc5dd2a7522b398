"""Drives casegate with the real Python clients its users run, unmodified.

usage: drive.py tapi|kibana-py BASE_URL TOKEN CASE_ID FILE NAME MIME [COMMENT]

Prints one JSON object: {"status": int, "body": <parsed JSON or text>, "headers": {...}}.

tapi always calls https://{tenant}.tines.com/api/...; the only thing changed here is
where that request goes (casegate on 127.0.0.1), by wrapping the httpx function tapi
calls. Everything tapi puts on the wire (its JSON with nulls, its headers) is its own.
"""
import base64
import json
import sys


def run_tapi(base, token, case_id, data, name, mime, comment):
    import importlib

    from tapi.api.case.files import CaseFilesAPI

    tc = importlib.import_module("tapi.client.client")

    original = tc.request

    def to_casegate(method, url, **kwargs):
        path = url.split(".tines.com", 1)[1]
        return original(method, base + path, **kwargs)

    tc.request = to_casegate
    api = CaseFilesAPI("tenant", token)
    res = api.create(
        case_id=int(case_id) if case_id.isdigit() else case_id,
        filename=name,
        file_contents=base64.b64encode(data).decode("ascii"),
        value=comment,
    )
    return {"status": res["status_code"], "body": res["body"], "headers": res["headers"]}


def run_kibana(base, token, case_id, data, name, mime, comment):
    from kibana import Kibana
    from kibana.exceptions import ApiError

    client = Kibana(base, api_key=token, max_retries=0)
    try:
        resp = client.cases.add_file(case_id=case_id, file=data, filename=name, mime_type=mime)
        return {"status": resp.meta.status, "body": resp.body, "headers": dict(resp.meta.headers)}
    except ApiError as e:
        return {"status": e.meta.status if hasattr(e, "meta") else getattr(e, "status_code", 0),
                "body": getattr(e, "body", str(e)), "headers": {}}


def main():
    client, base, token, case_id, path, name, mime = sys.argv[1:8]
    comment = sys.argv[8] if len(sys.argv) > 8 else None
    with open(path, "rb") as f:
        data = f.read()
    run = {"tapi": run_tapi, "kibana-py": run_kibana}[client]
    print(json.dumps(run(base, token, case_id, data, name, mime, comment), default=str))


if __name__ == "__main__":
    main()
