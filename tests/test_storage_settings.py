"""Storage settings: one place (conf file and environment) gives delta-rs, pyarrow and Spark's S3A the same store."""

from __future__ import annotations

import pytest

from spark_recover.config import load_settings
from spark_recover.errors import UsageError
from spark_recover.storage import hadoop_confs


def test_s3_root_takes_the_environment_and_commits_conditionally(monkeypatch, tmp_path):
    conf = tmp_path / "recover.toml"
    conf.write_text('[recover]\nroot = "s3a://bucket/recover"\n[storage_options]\nAWS_REGION = "eu-west-1"\n')
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # the file's own value wins
    opts = load_settings(conf_file=conf).storage_options
    assert opts == {"AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
                    "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_ALLOW_HTTP": "true",
                    "aws_conditional_put": "etag"}
    assert hadoop_confs(opts) == {
        "fs.s3a.access.key": "key", "fs.s3a.secret.key": "secret", "fs.s3a.endpoint.region": "eu-west-1",
        "fs.s3a.endpoint": "http://127.0.0.1:9000", "fs.s3a.path.style.access": "true"}


def test_local_root_gets_no_s3_options(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    assert load_settings(root=str(tmp_path)).storage_options == {}


def test_session_credentials_and_virtual_hosted_style():
    confs = hadoop_confs({"aws_session_token": "t", "AWS_ENDPOINT_URL": "https://s3.example",
                          "aws_virtual_hosted_style_request": "true"})
    assert confs == {"fs.s3a.session.token": "t", "fs.s3a.endpoint": "https://s3.example",
                     "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"}


def test_shared_root_is_declared_in_the_file_or_the_environment(monkeypatch, tmp_path):
    conf = tmp_path / "recover.toml"
    conf.write_text("[recover]\nshared_root = true\n")
    assert load_settings(conf_file=conf).shared_root is True
    conf.write_text('[recover]\nshared_root = "yes"\n')
    with pytest.raises(UsageError, match="wrong type"):
        load_settings(conf_file=conf)
    monkeypatch.setenv("SPARK_RECOVER_SHARED_ROOT", "1")
    assert load_settings(root=str(tmp_path)).shared_root is True
