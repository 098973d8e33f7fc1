-- One row per audience, cohort (the day its members entered) and group: how many
-- members, how many bought within the window, their orders and revenue. `complete`:
-- the window has fully elapsed by the as-of day, so the cohort's figures are final.
SELECT audience,
       entered_on AS cohort_date,
       CAST(CASE WHEN in_holdout THEN 'control' ELSE 'treatment' END AS VARCHAR) AS "group",
       members,
       converted,
       CAST(converted AS DOUBLE PRECISION) / members AS conversion_rate,
       orders,
       revenue,
       CAST(revenue AS DOUBLE PRECISION) / members AS revenue_per_member,
       window_days,
       complete
FROM {{ measured }}
