//! cronjob-controller: Jobs from a CronJob's schedule, as upstream.
//! Standard five-field cron (minute hour day-of-month month day-of-week,
//! names, ranges, steps, lists, and the @hourly/@daily/... macros), in UTC
//! unless `timeZone` is "UTC"/"Etc/UTC" (other zones are refused with an
//! event, not guessed). At each due time: startingDeadlineSeconds skips
//! runs that are too late; concurrencyPolicy Allow, Forbid (skip while a
//! Job runs) or Replace (delete the running ones); the Job is named
//! `NAME-<minutes since the epoch>` so a time is never run twice, and
//! carries upstream's scheduled-timestamp annotation. Finished Jobs beyond
//! successfulJobsHistoryLimit (3) / failedJobsHistoryLimit (1) are deleted.
//! Status active, lastScheduleTime, lastSuccessfulTime.

use std::sync::Arc;
use std::time::Duration;

use common::events::{EventType, Recorder};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::replicaset::controller_of;
use crate::{key_of, queue, run_workers, split_key, Ctx, Started, SyncResult};

/// A parsed schedule: the allowed values of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    /// day-of-month and day-of-week both restricted: either may match (as cron)
    either_day: bool,
}

fn field(text: &str, min: u32, max: u32, names: &[&str]) -> Result<(Vec<bool>, bool), String> {
    let mut allowed = vec![false; max as usize + 1];
    let star = text == "*" || text == "?";
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(min + i as u32);
        }
        s.parse::<u32>()
            .map_err(|_| format!("{s:?} is not a number"))
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| format!("bad step {s:?}"))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err("a step of 0".into());
        }
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{part:?} is out of range {min}-{max}"));
        }
        let mut v = lo;
        while v <= hi {
            allowed[v as usize] = true;
            v += step;
        }
    }
    Ok((allowed, star))
}

impl Schedule {
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        let expanded = match spec.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "{spec:?}: expected exactly 5 fields, found {}",
                f.len()
            ));
        }
        const MONTHS: &[&str] = &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let (minutes, _) = field(f[0], 0, 59, &[])?;
        let (hours, _) = field(f[1], 0, 23, &[])?;
        let (days, any_day) = field(f[2], 1, 31, &[])?;
        let (months, _) = field(f[3], 1, 12, MONTHS)?;
        let (mut weekdays, any_weekday) = field(f[4], 0, 7, DAYS)?;
        // 7 is Sunday too
        if weekdays[7] {
            weekdays[0] = true;
        }
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            either_day: !any_day && !any_weekday,
        })
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let d = self.days[day as usize];
        let w = self.weekdays[weekday as usize];
        if self.either_day {
            d || w
        } else {
            d && w
        }
    }

    /// The first scheduled time strictly after `t` (unix seconds), searching
    /// up to five years ahead.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        use chrono::{DateTime, Datelike, Duration as D, Timelike, Utc};
        let start = DateTime::<Utc>::from_timestamp(t - t.rem_euclid(60) + 60, 0)?;
        let mut c = start;
        let end = start + D::days(366 * 5);
        while c < end {
            if !self.months[c.month() as usize] {
                // first minute of the next month
                let (y, m) = if c.month() == 12 {
                    (c.year() + 1, 1)
                } else {
                    (c.year(), c.month() + 1)
                };
                c = DateTime::<Utc>::from_naive_utc_and_offset(
                    chrono::NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?,
                    Utc,
                );
                continue;
            }
            if !self.day_matches(c.day(), c.weekday().num_days_from_sunday()) {
                c = (c + D::days(1)).with_hour(0)?.with_minute(0)?;
                continue;
            }
            if !self.hours[c.hour() as usize] {
                c = (c + D::hours(1)).with_minute(0)?;
                continue;
            }
            if !self.minutes[c.minute() as usize] {
                c += D::minutes(1);
                continue;
            }
            return Some(c.timestamp());
        }
        None
    }
}

/// Scheduled times in (after, now]: the most recent one, and how many there were.
pub fn missed(s: &Schedule, after: i64, now: i64) -> (Option<i64>, usize) {
    let mut last = None;
    let mut n = 0;
    let mut t = after;
    while let Some(next) = s.next_after(t) {
        if next > now {
            break;
        }
        last = Some(next);
        n += 1;
        t = next;
        if n > 100 {
            break;
        }
    }
    (last, n)
}

pub fn start(ctx: Ctx) -> Started {
    Box::pin(run(ctx))
}

struct Controller {
    client: kube::Client,
    cronjobs: Store<CronJob>,
    jobs: Store<Job>,
    recorder: Recorder,
}

async fn run(ctx: Ctx) {
    let cronjobs = ctx.informers.get::<CronJob>();
    let jobs = ctx.informers.get::<Job>();
    let q = queue();
    let feeder = crate::feed(q.clone(), &cronjobs, &jobs, "CronJob");
    cronjobs.wait_synced().await;
    jobs.wait_synced().await;
    for c in cronjobs.store().state() {
        q.add(key_of(&c.metadata));
    }
    let c = Arc::new(Controller {
        recorder: Recorder::new(ctx.client.clone(), "cronjob-controller", None),
        client: ctx.client.clone(),
        cronjobs: cronjobs.store(),
        jobs: jobs.store(),
    });
    run_workers(
        "cronjob",
        q,
        ctx.settings.concurrent_cron_job_syncs,
        ctx.stop.clone(),
        move |key| {
            let c = c.clone();
            async move { c.sync(&key).await }
        },
    )
    .await;
    feeder.abort();
}

/// "Complete" or "Failed" once a job has finished.
fn job_outcome(j: &Job) -> Option<&'static str> {
    let conds = j.status.as_ref()?.conditions.as_ref()?;
    if conds
        .iter()
        .any(|c| c.type_ == "Complete" && c.status == "True")
    {
        Some("Complete")
    } else if conds
        .iter()
        .any(|c| c.type_ == "Failed" && c.status == "True")
    {
        Some("Failed")
    } else {
        None
    }
}

impl Controller {
    async fn sync(&self, key: &str) -> SyncResult {
        let (ns, name) = split_key(key);
        let Some(cj) = self.cronjobs.get(&ObjectRef::new(name).within(ns)) else {
            return Ok(None);
        };
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = cj.spec.clone().unwrap_or_default();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let jobs_api: Api<Job> = Api::namespaced(self.client.clone(), ns);
        let mut jobs: Vec<Arc<Job>> = self
            .jobs
            .state()
            .into_iter()
            .filter(|j| j.metadata.namespace.as_deref() == Some(ns))
            .filter(|j| controller_of(&j.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let status = cj.status.clone().unwrap_or_default();
        let mut last_success = status.last_successful_time.clone();
        for j in &jobs {
            if job_outcome(j) == Some("Complete") {
                let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                if done.as_ref().map(|t| t.0) > last_success.as_ref().map(|t| t.0) {
                    last_success = done;
                }
            }
        }
        // history limits, oldest first
        for (outcome, limit) in [
            ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
            ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let done: Vec<&Arc<Job>> = jobs
                .iter()
                .filter(|j| job_outcome(j) == Some(outcome))
                .collect();
            let extra = done.len().saturating_sub(limit.max(0) as usize);
            for j in done.into_iter().take(extra) {
                self.delete_job(&jobs_api, &cj, j).await?;
            }
        }
        let mut active: Vec<Arc<Job>> = jobs
            .iter()
            .filter(|j| job_outcome(j).is_none())
            .cloned()
            .collect();
        let tz = spec.time_zone.as_deref().unwrap_or("UTC");
        if tz != "UTC" && tz != "Etc/UTC" {
            self.recorder.emit(
                &crate::object_ref(&*cj),
                EventType::Warning,
                "UnknownTimeZone",
                &format!("invalid timeZone: {tz:?}: only UTC is supported"),
            );
            return Ok(None);
        }
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                self.recorder.emit(
                    &crate::object_ref(&*cj),
                    EventType::Warning,
                    "UnparseableSchedule",
                    &format!("unparseable schedule: {e}"),
                );
                return Ok(None);
            }
        };
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let since = status
            .last_schedule_time
            .as_ref()
            .or(cj.metadata.creation_timestamp.as_ref())
            .map_or(now, |t| t.0.as_second());
        let (due, count) = missed(&schedule, since, now);
        if count > 100 {
            self.recorder.emit(
                &crate::object_ref(&*cj),
                EventType::Warning,
                "TooManyMissedTimes",
                "too many missed start times (> 100); check clock skew",
            );
        }
        let mut last_schedule = status.last_schedule_time.clone();
        if let Some(t) = due.filter(|_| !spec.suspend.unwrap_or(false)) {
            let late = spec.starting_deadline_seconds.is_some_and(|d| now - t > d);
            let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
            if late {
                self.recorder.emit(
                    &crate::object_ref(&*cj),
                    EventType::Warning,
                    "MissSchedule",
                    &format!("Missed scheduled time to start a job: {}", ts(t)),
                );
            } else if policy == "Forbid" && !active.is_empty() {
                // skipped: the running job keeps going; the time is not run later
                tracing::info!(
                    cronjob = key,
                    "a job is still running; skipping this time (Forbid)"
                );
            } else {
                if policy == "Replace" {
                    for j in std::mem::take(&mut active) {
                        self.delete_job(&jobs_api, &cj, &j).await?;
                    }
                }
                if let Some(j) = self.create_job(&jobs_api, &cj, t).await? {
                    active.push(Arc::new(j));
                }
            }
            last_schedule = k8s_openapi::jiff::Timestamp::from_second(t)
                .ok()
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time);
        }
        let refs: Vec<ObjectReference> = active
            .iter()
            .map(|j| ObjectReference {
                api_version: Some("batch/v1".into()),
                kind: Some("Job".into()),
                name: j.metadata.name.clone(),
                namespace: j.metadata.namespace.clone(),
                uid: j.metadata.uid.clone(),
                resource_version: j.metadata.resource_version.clone(),
                ..Default::default()
            })
            .collect();
        let names = |v: &[ObjectReference]| v.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        let changed = names(status.active.as_deref().unwrap_or_default()) != names(&refs)
            || status.last_schedule_time.as_ref().map(|t| t.0)
                != last_schedule.as_ref().map(|t| t.0)
            || status.last_successful_time.as_ref().map(|t| t.0)
                != last_success.as_ref().map(|t| t.0);
        if changed {
            let api: Api<CronJob> = Api::namespaced(self.client.clone(), ns);
            let patch = json!({"status": {"active": refs, "lastScheduleTime": last_schedule, "lastSuccessfulTime": last_success}});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        // come back at the next due time
        let next = schedule.next_after(now).map_or(60, |n| (n - now).max(1));
        Ok(Some(Duration::from_secs(u64::try_from(next).unwrap_or(60))))
    }

    async fn create_job(
        &self,
        api: &Api<Job>,
        cj: &CronJob,
        t: i64,
    ) -> anyhow::Result<Option<Job>> {
        let name = cj.metadata.name.as_deref().unwrap_or_default();
        let spec = cj.spec.clone().unwrap_or_default();
        let template = spec.job_template;
        let mut meta = template.metadata.unwrap_or_default();
        meta.name = Some(format!("{name}-{}", t / 60));
        meta.namespace = cj.metadata.namespace.clone();
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(
                "batch.kubernetes.io/cronjob-scheduled-timestamp".into(),
                ts(t),
            );
        meta.owner_references = Some(vec![OwnerReference {
            api_version: "batch/v1".into(),
            kind: "CronJob".into(),
            name: name.into(),
            uid: cj.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        let job = Job {
            metadata: meta,
            spec: template.spec,
            status: None,
        };
        match api.create(&PostParams::default(), &job).await {
            Ok(j) => {
                self.recorder.emit(
                    &crate::object_ref(cj),
                    EventType::Normal,
                    "SuccessfulCreate",
                    &format!(
                        "Created job {}",
                        j.metadata.name.as_deref().unwrap_or_default()
                    ),
                );
                Ok(Some(j))
            }
            // this time already has its job
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
            Err(e) => {
                self.recorder.emit(
                    &crate::object_ref(cj),
                    EventType::Warning,
                    "FailedCreate",
                    &format!("Error creating job: {e}"),
                );
                Err(e.into())
            }
        }
    }

    async fn delete_job(&self, api: &Api<Job>, cj: &CronJob, j: &Job) -> anyhow::Result<()> {
        let name = j.metadata.name.as_deref().unwrap_or_default();
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                self.recorder.emit(
                    &crate::object_ref(cj),
                    EventType::Normal,
                    "SuccessfulDelete",
                    &format!("Deleted job {name}"),
                );
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn ts(t: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(t)
        .map(|x| x.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        s.parse::<k8s_openapi::jiff::Timestamp>()
            .expect("time")
            .as_second()
    }

    #[test]
    fn schedules_as_cron() {
        let every_15 = Schedule::parse("*/15 * * * *").expect("parse");
        assert_eq!(
            every_15.next_after(at("2026-11-23T10:07:30Z")),
            Some(at("2026-11-23T10:15:00Z"))
        );
        assert_eq!(
            every_15.next_after(at("2026-11-23T10:15:00Z")),
            Some(at("2026-11-23T10:30:00Z"))
        );
        let weekdays = Schedule::parse("30 9 * * mon-fri").expect("parse");
        // 2026-11-21 is a Saturday
        assert_eq!(
            weekdays.next_after(at("2026-11-21T12:00:00Z")),
            Some(at("2026-11-23T09:30:00Z"))
        );
        let daily = Schedule::parse("@daily").expect("parse");
        assert_eq!(
            daily.next_after(at("2026-12-31T23:59:00Z")),
            Some(at("2027-01-01T00:00:00Z"))
        );
        let either = Schedule::parse("0 0 13 * 5").expect("parse");
        // the 13th, or any Friday (2026-11-27 is a Friday)
        assert_eq!(
            either.next_after(at("2026-11-23T00:00:00Z")),
            Some(at("2026-11-27T00:00:00Z"))
        );
        let feb29 = Schedule::parse("0 0 29 2 *").expect("parse");
        assert_eq!(
            feb29.next_after(at("2026-03-01T00:00:00Z")),
            Some(at("2028-02-29T00:00:00Z"))
        );
        for bad in [
            "* * * *",
            "61 * * * *",
            "*/0 * * * *",
            "a b c d e",
            "5-1 * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missed_times() {
        let s = Schedule::parse("* * * * *").expect("parse");
        let (last, n) = missed(&s, at("2026-11-23T10:00:00Z"), at("2026-11-23T10:03:30Z"));
        assert_eq!((last, n), (Some(at("2026-11-23T10:03:00Z")), 3));
        assert_eq!(
            missed(&s, at("2026-11-23T10:00:00Z"), at("2026-11-23T10:00:59Z")),
            (None, 0)
        );
    }
}
