-- How often each product category is re-bought: the gaps (days) between a customer's
-- consecutive purchase days of that category, summarized as median, p80 and p90.
-- A category with fewer than churn.min_category_support gaps falls back to the
-- shop-wide cycle (row '*'); churn.categories in the configuration overrides any.
WITH category_days AS (
    SELECT customer_id, category, day FROM {{ mart('customer_category_days') }}
), category_gaps AS (
    SELECT category, customer_id,
           day - LAG(day) OVER (PARTITION BY customer_id, category ORDER BY day) AS gap
    FROM category_days
), shop_gaps AS (
    SELECT customer_id, gap FROM {{ mart('customer_purchase_days') }}
), learned AS (
    SELECT category,
           COUNT(gap) AS support,
           COUNT(DISTINCT customer_id) FILTER (WHERE gap IS NOT NULL) AS repeat_customers,
           COUNT(DISTINCT customer_id) AS customers,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) AS median_gap_days,
           percentile_cont(0.8) WITHIN GROUP (ORDER BY gap) AS p80_gap_days,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY gap) AS p90_gap_days
    FROM category_gaps
    GROUP BY category
), shop AS (
    SELECT CAST('*' AS VARCHAR) AS category,
           COUNT(gap) AS support,
           COUNT(DISTINCT customer_id) FILTER (WHERE gap IS NOT NULL) AS repeat_customers,
           COUNT(DISTINCT customer_id) AS customers,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) AS median_gap_days,
           percentile_cont(0.8) WITHIN GROUP (ORDER BY gap) AS p80_gap_days,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY gap) AS p90_gap_days
    FROM shop_gaps
), shop_thresholds AS (
    SELECT CASE WHEN support > 0 THEN 'shop' ELSE 'default' END AS basis,
           CASE WHEN support > 0 THEN median_gap_days ELSE {{ settings.churn.default_at_risk_days }} END AS typical_gap_days,
           CASE WHEN support > 0
                THEN GREATEST({{ settings.churn.min_threshold_days }}, p80_gap_days * {{ settings.churn.category_at_risk_factor }})
                ELSE {{ settings.churn.default_at_risk_days }} END AS at_risk_days,
           CASE WHEN support > 0
                THEN GREATEST({{ settings.churn.min_threshold_days }}, p90_gap_days * {{ settings.churn.category_churn_factor }})
                ELSE {{ settings.churn.default_churn_days }} END AS churn_days
    FROM shop
), overrides (category, at_risk_days, churn_days) AS (
    {%- for name, o in settings.churn.categories.items() %}
    {{ 'UNION ALL ' if not loop.first }}SELECT CAST({{ lit(name) }} AS VARCHAR), CAST({{ o.at_risk_days }} AS DOUBLE PRECISION), CAST({{ o.churn_days }} AS DOUBLE PRECISION)
    {%- else %}
    SELECT CAST(NULL AS VARCHAR), CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS DOUBLE PRECISION) WHERE 1 = 0
    {%- endfor %}
), categories AS (
    SELECT category, support, repeat_customers, customers, median_gap_days, p80_gap_days, p90_gap_days FROM learned
    UNION ALL
    SELECT o.category, 0, 0, 0, NULL, NULL, NULL FROM overrides o
    WHERE NOT EXISTS (SELECT 1 FROM learned l WHERE l.category = o.category)
)
SELECT c.category,
       CAST(c.support AS BIGINT) AS support,
       CAST(c.repeat_customers AS BIGINT) AS repeat_customers,
       CAST(c.customers AS BIGINT) AS customers,
       CAST(c.median_gap_days AS DOUBLE PRECISION) AS median_gap_days,
       CAST(c.p80_gap_days AS DOUBLE PRECISION) AS p80_gap_days,
       CAST(c.p90_gap_days AS DOUBLE PRECISION) AS p90_gap_days,
       CASE WHEN o.category IS NOT NULL THEN 'config'
            WHEN c.support >= {{ settings.churn.min_category_support }} THEN 'data'
            ELSE s.basis END AS basis,
       CAST(CASE WHEN o.category IS NOT NULL THEN COALESCE(c.median_gap_days, o.at_risk_days)
                 WHEN c.support >= {{ settings.churn.min_category_support }} THEN c.median_gap_days
                 ELSE s.typical_gap_days END AS DOUBLE PRECISION) AS typical_gap_days,
       CAST(CASE WHEN o.category IS NOT NULL THEN o.at_risk_days
                 WHEN c.support >= {{ settings.churn.min_category_support }}
                 THEN GREATEST({{ settings.churn.min_threshold_days }}, c.p80_gap_days * {{ settings.churn.category_at_risk_factor }})
                 ELSE s.at_risk_days END AS DOUBLE PRECISION) AS at_risk_days,
       CAST(CASE WHEN o.category IS NOT NULL THEN o.churn_days
                 WHEN c.support >= {{ settings.churn.min_category_support }}
                 THEN GREATEST({{ settings.churn.min_threshold_days }}, c.p90_gap_days * {{ settings.churn.category_churn_factor }})
                 ELSE s.churn_days END AS DOUBLE PRECISION) AS churn_days
FROM categories c
CROSS JOIN shop_thresholds s
LEFT JOIN overrides o ON o.category = c.category
UNION ALL
SELECT '*', CAST(h.support AS BIGINT), CAST(h.repeat_customers AS BIGINT), CAST(h.customers AS BIGINT),
       CAST(h.median_gap_days AS DOUBLE PRECISION), CAST(h.p80_gap_days AS DOUBLE PRECISION),
       CAST(h.p90_gap_days AS DOUBLE PRECISION), s.basis,
       CAST(s.typical_gap_days AS DOUBLE PRECISION), CAST(s.at_risk_days AS DOUBLE PRECISION),
       CAST(s.churn_days AS DOUBLE PRECISION)
FROM shop h CROSS JOIN shop_thresholds s
