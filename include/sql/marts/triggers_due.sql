-- One row per customer and personal occasion due at the as-of day (segments.triggers):
--   birthday       from birthday_days_before days before the birthday to the day itself
--   milestone      the day after the customer's N-th purchase day, N in milestones
--   anniversary    every anniversary_days since the first purchase day
--   replenishment  replenishment_days_before the expected next order, for customers whose
--                  main category is re-bought within replenishment_max_cycle_days
--   thank_you      a purchase delivered within the last thank_you_within_hours (the latest)
-- Milestone, anniversary and replenishment stay due stay_due_days from their due day.
-- occasion_on is the day the message is about; due_on the first day it is due.
{%- set t = settings.triggers %}
WITH birthdays AS (
    SELECT customer_id, birth_date,
           CAST(EXTRACT(YEAR FROM {{ as_of }}) - EXTRACT(YEAR FROM birth_date) AS INTEGER) AS years
    FROM {{ src('customers') }} c
    WHERE birth_date IS NOT NULL AND birth_date <= {{ as_of }}
), next_birthdays AS (
    -- date + years clamps 29 February to the 28th in other years (DuckDB and PostgreSQL)
    SELECT customer_id, birth_date,
           CASE WHEN CAST(birth_date + INTERVAL '1 year' * years AS DATE) >= {{ as_of }}
                THEN CAST(birth_date + INTERVAL '1 year' * years AS DATE)
                ELSE CAST(birth_date + INTERVAL '1 year' * (years + 1) AS DATE) END AS birthday
    FROM birthdays
), stay AS (
    SELECT CAST({{ t.stay_due_days }} AS INTEGER) AS days
), occasions AS (
    SELECT customer_id, CAST('birthday' AS VARCHAR) AS trigger_name,
           birthday - {{ t.birthday_days_before }} AS due_on, birthday AS occasion_on,
           CAST(NULL AS BIGINT) AS milestone,
           CAST(EXTRACT(YEAR FROM birthday) - EXTRACT(YEAR FROM birth_date) AS BIGINT) AS years,
           CAST(NULL AS VARCHAR) AS category, CAST(NULL AS VARCHAR) AS order_id
    FROM next_birthdays
    WHERE birthday - {{ t.birthday_days_before }} <= {{ as_of }}
{%- if t.milestones %}
    UNION ALL
    SELECT customer_id, 'milestone', day + 1, day, CAST(nth AS BIGINT), NULL, NULL, NULL
    FROM {{ mart('customer_purchase_days') }}
    WHERE nth IN ({{ t.milestones | join(', ') }})
      AND day + 1 <= {{ as_of }} AND {{ as_of }} < day + 1 + (SELECT days FROM stay)
{%- endif %}
    UNION ALL
    SELECT customer_id, 'anniversary', anniversary, anniversary, NULL, years, NULL, NULL
    FROM (
        SELECT customer_id,
               -- FLOOR of a float division: DuckDB's `/` of integers is not integer division
               CAST(FLOOR(({{ as_of }} - first_purchase_day) / {{ t.anniversary_days }}.0) AS BIGINT) AS years,
               first_purchase_day + CAST(FLOOR(({{ as_of }} - first_purchase_day) / {{ t.anniversary_days }}.0) AS INTEGER)
                                    * {{ t.anniversary_days }} AS anniversary
        FROM {{ mart('customer_facts') }}
        WHERE first_purchase_day <= {{ as_of }} - {{ t.anniversary_days }}
    ) a
    WHERE {{ as_of }} < anniversary + (SELECT days FROM stay)
    UNION ALL
    SELECT s.customer_id, 'replenishment', s.expected_next_order_date - {{ t.replenishment_days_before }},
           s.expected_next_order_date, NULL, NULL, s.main_category, NULL
    FROM {{ mart('customer_segments') }} s
    JOIN {{ mart('category_cycles') }} c ON c.category = s.main_category
    WHERE c.basis IN ('data', 'config') AND c.typical_gap_days < {{ t.replenishment_max_cycle_days }}
      AND s.expected_next_order_date - {{ t.replenishment_days_before }} <= {{ as_of }}
      AND {{ as_of }} < s.expected_next_order_date - {{ t.replenishment_days_before }} + (SELECT days FROM stay)
    UNION ALL
    SELECT customer_id, 'thank_you', CAST(delivered_at AS DATE), CAST(delivered_at AS DATE), NULL, NULL, NULL, order_id
    FROM (
        SELECT customer_id, order_id, delivered_at,
               ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY delivered_at DESC, order_id DESC) AS latest
        FROM {{ src('orders') }} orders
        WHERE status IN {{ purchase_statuses }}
          AND delivered_at >= {{ now }} - INTERVAL '{{ (t.thank_you_within_hours * 60) | round | int }} minutes'
          AND delivered_at < {{ now }}
    ) d
    WHERE latest = 1
)
SELECT o.customer_id, o.trigger_name AS "trigger", o.due_on, o.occasion_on, o.milestone, o.years, o.category,
       o.order_id, s.lifecycle_stage
FROM occasions o
LEFT JOIN {{ mart('customer_segments') }} s ON s.customer_id = o.customer_id
