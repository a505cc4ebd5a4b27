"""The Spark session as ``build_spark_session`` starts it (a real JVM)."""

from __future__ import annotations

from ecom_ingest_dagster.settings import Settings


def test_the_driver_jvm_runs_with_the_configured_java_options(spark):
    # The session fixture is built from default settings: the options must be on the
    # running JVM's own command line, not only in Spark's configuration.
    arguments = list(spark._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    expected = Settings.model_fields["spark_driver_java_options"].default.split()
    assert expected and all(option in arguments for option in expected), arguments
    # Spark adds its own module options in front of ours.
    assert spark.sparkContext.getConf().get("spark.driver.extraJavaOptions").endswith(" ".join(expected))


def test_a_cluster_driver_is_addressed_explicitly_whatever_pandera_set_on_import():
    import ipaddress
    import os

    import pandera.pandas  # noqa: F401  # sets SPARK_LOCAL_IP=127.0.0.1 when it is unset

    from ecom_ingest_dagster.pipeline.spark import default_driver_host, driver_address_conf

    assert os.environ.get("SPARK_LOCAL_IP")  # the trap is armed in this process
    cluster = Settings(spark_master="spark://spark-master:7077")
    conf = driver_address_conf(cluster)
    assert conf == {"spark.driver.host": default_driver_host()}
    assert not ipaddress.ip_address(conf["spark.driver.host"]).is_loopback  # an address executors elsewhere can reach
    set_explicitly = Settings(spark_master="spark://m:7077", spark_driver_host="dagster-code",
                              spark_driver_bind_address="0.0.0.0")
    assert driver_address_conf(set_explicitly) == {"spark.driver.host": "dagster-code", "spark.driver.bindAddress": "0.0.0.0"}
    # Local mode keeps Spark's own choice (loopback): nothing to reach from elsewhere.
    assert driver_address_conf(Settings(spark_master="local[2]")) == {}
