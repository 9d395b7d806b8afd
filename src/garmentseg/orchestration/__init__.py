"""Running the library under Airflow: task bodies (`tasks`), what the DAG files share (`dag_support`), and
a local Airflow for the demo and the tests (`embedded`)."""
