"""One measured backup, run as its own process by bench/backup_vs_shell.py; prints a JSON line.

The parent passes ``PREFECT_API_URL`` of a Prefect server it started (as a worker's flow process has);
a trivial flow warms the client up first, so the timed part is the backup flow itself: initialize,
dump -> zstd-3 -> AES-256-GCM -> destination, verify, manifest, completion.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from prefect import flow
from prefect_db_backup.blocks import (
    BackupJob,
    EncryptionProfile,
    LocalDestination,
    PostgresSource,
    S3Destination,
)
from prefect_db_backup.flows.backup import backup_database


@flow(persist_result=False)
def warm_up() -> int:
    return 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True)
    parser.add_argument("--local", help="local destination folder")
    parser.add_argument("--s3", help="JSON with endpoint, bucket, access_key, secret_key")
    parser.add_argument("--verify", default="checksum")
    args = parser.parse_args()

    if args.s3:
        from prefect_aws import AwsClientParameters, MinIOCredentials

        s3 = json.loads(args.s3)
        destination = S3Destination(
            bucket=s3["bucket"],
            credentials=MinIOCredentials(
                minio_root_user=s3["access_key"],
                minio_root_password=s3["secret_key"],
                region_name="us-east-1",
                aws_client_parameters=AwsClientParameters(endpoint_url=s3["endpoint"]),
            ),
        )
    else:
        destination = LocalDestination(path=args.local)
    job = BackupJob(
        name="bench",
        source=PostgresSource(host="127.0.0.1", port=5432, user="postgres", databases=[args.database]),
        destinations=[destination],
        compression="zstd",
        compression_level=3,
        encryption=EncryptionProfile.generate(),
        verify=args.verify,
    )
    warm_up()
    started = time.perf_counter()
    result = backup_database(job)
    seconds = time.perf_counter() - started
    db = result.databases[0]  # type: ignore[union-attr]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "dump_seconds": sum(d.seconds for d in result.databases),
                "plaintext_size": db.plaintext_size,
                "stored_size": db.stored_size,
                "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "status": result.status,  # type: ignore[union-attr]
            }
        )
    )


if __name__ == "__main__":
    main()
