-- Independent check on the recruit db (read-only): same population, matching on (system, code).
-- :sys_clin = 'snomed' restricts clinical codelists to snomedct rows as ehrQL's core schema must.
CREATE TEMP TABLE cl(name, code, system);
.mode csv
.import --skip 1 '|cut -d, -f1,2 rules/codelists/chronic_pain.csv | sed "s/^/chronic_pain,/"' cl
.import --skip 1 '|cut -d, -f1,2 rules/codelists/opioids.csv | sed "s/^/opioids,/"' cl
.import --skip 1 '|cut -d, -f1,2 rules/codelists/employment_status.csv | sed "s/^/employment_status,/"' cl
.mode list
SELECT name, system, count(*) FROM cl GROUP BY 1,2;
CREATE TEMP TABLE base AS SELECT p.id FROM patient p
 WHERE p.registration_start <= '2026-11-01' AND (p.registration_end IS NULL OR p.registration_end >= '2026-11-01')
   AND (p.date_of_death IS NULL OR p.date_of_death > '2026-11-01')
   AND (cast(strftime('%Y','2026-11-01') as int) - cast(strftime('%Y',p.date_of_birth) as int)
        - (strftime('%m-%d',p.date_of_birth) > '11-01')) BETWEEN 18 AND 64
   AND (SELECT count(*) FROM medication_issue m JOIN cl ON cl.name='opioids' AND cl.system=m.code_system AND cl.code=m.code
        WHERE m.patient_id=p.id AND m.issue_date BETWEEN '2025-11-01' AND '2026-11-01') >= 3;
SELECT 'base (registered, alive, 18-64, >=3 opioids 12m)', count(*) FROM base;
SELECT 'all systems', count(*) FROM base b
 WHERE EXISTS (SELECT 1 FROM clinical_event e JOIN cl ON cl.name='chronic_pain' AND cl.system=e.code_system AND cl.code=e.code WHERE e.patient_id=b.id AND e.event_date <= '2026-11-01')
   AND NOT EXISTS (SELECT 1 FROM clinical_event e JOIN cl ON cl.name='employment_status' AND cl.system=e.code_system AND cl.code=e.code WHERE e.patient_id=b.id AND e.event_date BETWEEN '2024-11-01' AND '2026-11-01');
SELECT 'snomedct only', count(*) FROM base b
 WHERE EXISTS (SELECT 1 FROM clinical_event e JOIN cl ON cl.name='chronic_pain' AND cl.system='snomedct' AND cl.system=e.code_system AND cl.code=e.code WHERE e.patient_id=b.id AND e.event_date <= '2026-11-01')
   AND NOT EXISTS (SELECT 1 FROM clinical_event e JOIN cl ON cl.name='employment_status' AND cl.system='snomedct' AND cl.system=e.code_system AND cl.code=e.code WHERE e.patient_id=b.id AND e.event_date BETWEEN '2024-11-01' AND '2026-11-01');
