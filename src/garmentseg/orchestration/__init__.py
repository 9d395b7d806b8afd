"""Running the library under Airflow: task bodies (`tasks`), what the DAG files share (`dag_support`)."""
