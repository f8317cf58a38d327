#!/usr/bin/env bash
# Airflow accounts of a GeoAudit deployment (FAB auth manager), run once the metadata
# database is migrated; safe to run again (existing roles and users are kept as they are).
#   AIRFLOW_ADMIN_USERNAME / AIRFLOW_ADMIN_PASSWORD   an Admin, for operators
#   GEOAUDIT_AIRFLOW_USERNAME / GEOAUDIT_AIRFLOW_PASSWORD   the dashboard's account
#   GEOAUDIT_AIRFLOW_TRIGGER_ROLE   its role (default GeoAuditTrigger)
# The role starts with no rights but reading assets and recording asset events (the
# "reviews" event that schedules retraining); each GeoAudit DAG adds, through its
# access_control (pipeline/airflow_api.py trigger_role_access), reading the DAG and its
# runs and, for audit DAGs only, starting runs (which FAB ties to "edit" on the DAG).
# It cannot delete anything, start or edit a retraining DAG, nor see any other DAG.
set -euo pipefail
role="${GEOAUDIT_AIRFLOW_TRIGGER_ROLE:-GeoAuditTrigger}"

user() {  # name password role
  airflow users create --username "$1" --password "$2" --role "$3" \
    --firstname "$1" --lastname GeoAudit --email "$1@geoaudit.invalid"
}

airflow roles create "$role"
airflow roles add-perms "$role" -r Assets "Asset Aliases" -a can_read  # listing assets reads both
airflow roles add-perms "$role" -r Assets -a can_create
user "${AIRFLOW_ADMIN_USERNAME:?}" "${AIRFLOW_ADMIN_PASSWORD:?}" Admin
user "${GEOAUDIT_AIRFLOW_USERNAME:?}" "${GEOAUDIT_AIRFLOW_PASSWORD:?}" "$role"
