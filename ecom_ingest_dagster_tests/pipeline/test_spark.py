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
