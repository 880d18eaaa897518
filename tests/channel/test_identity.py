import json

from garrison.channel.identity import hello_from_env


def test_hello_from_cf_environment() -> None:
    vcap = {
        "application_name": "shop",
        "application_id": "6f1c-guid",
        "organization_name": "acme",
        "space_name": "prod",
        "instance_index": 3,
    }
    h = hello_from_env({"VCAP_APPLICATION": json.dumps(vcap), "DEFENDER_APP_ID": "shop-app"}, kernel={"x": 1})
    assert (h.app_id, h.app_name, h.org, h.space, h.app_guid, h.instance) == (
        "shop-app",
        "shop",
        "acme",
        "prod",
        "6f1c-guid",
        3,
    )
    assert h.defender_id == "shop-app-3" and h.kernel == {"x": 1}


def test_garbled_vcap_is_not_fatal() -> None:
    h = hello_from_env({"VCAP_APPLICATION": "{not json", "CF_INSTANCE_INDEX": "x"})
    assert h.app_name == "" and h.instance == 0 and h.defender_id == ""
    h = hello_from_env({"VCAP_APPLICATION": '["list"]', "DEFENDER_ID": "d1"})
    assert h.defender_id == "d1-0"
