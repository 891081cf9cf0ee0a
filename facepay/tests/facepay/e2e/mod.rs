//! End to end: the embedded pipeline under a simulated fleet, and the production profile
//! over a real Kafka-API broker and PostgreSQL: transport and poison messages, Kafka equal to
//! embedded, two processes sharing the partitions, kill -9 under load, the sharded gather's
//! failover, three processes killed in turn (chaos), PostgreSQL and broker restarts, and what
//! a deleted face leaves on disk.

mod broker_restart;
mod chaos;
mod crash;
mod data_dir;
mod device_wait;
mod embedded_pipeline;
mod end_to_end;
mod erasure;
mod gather_failover;
mod kafka_pipeline;
mod restarts;
mod scale_out;
