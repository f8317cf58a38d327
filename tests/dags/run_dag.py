"""Run one DAG of ``dags/`` with ``dag.test()`` and print the outcome as JSON.

Used by the DAG tests in a subprocess, so each run gets the environment (AIRFLOW_HOME,
GEOAUDIT_*) it is started with, as an Airflow worker would:

    python tests/dags/run_dag.py <dag_id> '<conf json>' [<logical date>]
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    dag_id, conf = sys.argv[1], json.loads(sys.argv[2])
    logical = sys.argv[3] if len(sys.argv) > 3 else None
    import pendulum
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import ParamValidationError

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dag = bag.dags[dag_id]
    t0 = time.perf_counter()
    try:
        run = dag.test(run_conf=conf, logical_date=pendulum.parse(logical) if logical else None)
    except ParamValidationError as exc:
        print(json.dumps({"param_error": str(exc)}))
        return
    tis = [
        {"task_id": ti.task_id, "map_index": ti.map_index, "state": str(ti.state)}
        for ti in run.get_task_instances()
    ]
    print(
        json.dumps(
            {
                "state": str(run.state),
                "run_id": run.run_id,
                "seconds": time.perf_counter() - t0,
                "tasks": tis,
            }
        )
    )


if __name__ == "__main__":
    main()
