-- Internal: one row per measured spell of audience_history — a spell during which its
-- audience was synced live at least once (a succeeded sync_runs row started on a day
-- in [entered_on, left_on or the as-of day]) — with what the member bought in the
-- conversion window: purchases (orders whose status is in segments.purchase_statuses,
-- by created_at) on a day in (entered_on, entered_on + window_days], their number and
-- their total_amount (revenue as customer_facts counts it: both read
-- customer_purchase_days, the build's purchases per customer and day). Both groups
-- pass the same sync test, so control spells cover the same days as treated ones;
-- the group is the assignment (intention to treat), whatever a platform did with the
-- member. Rendered into a temporary table read by campaign_outcomes and lift_groups.
WITH settings AS (
{%- for name, window_days in windows.items() %}
    {{ 'UNION ALL' if not loop.first }}
    SELECT CAST({{ lit(name) }} AS VARCHAR) AS audience, CAST({{ window_days }} AS INTEGER) AS window_days
{%- else %}
    SELECT CAST(NULL AS VARCHAR) AS audience, CAST(NULL AS INTEGER) AS window_days WHERE 1 = 0
{%- endfor %}
), synced AS (
    SELECT DISTINCT audience, CAST(started_at AS DATE) AS day
    FROM {{ sync_runs }} runs
    WHERE status = 'succeeded' AND started_at < {{ cutoff }}
), cohorts AS (
    -- per audience and entry day, the first live sync on or after it: a spell was synced
    -- when that day is not after its end (a join over the few cohorts, not the spells)
    SELECT c.audience, c.entered_on, MIN(y.day) AS first_synced
    FROM (SELECT DISTINCT audience, entered_on FROM audience_history WHERE entered_on <= {{ as_of }}) c
    JOIN synced y ON y.audience = c.audience AND y.day >= c.entered_on
    GROUP BY c.audience, c.entered_on
), spells AS (
    SELECT h.audience, h.member_key, h.customer_id, h.in_holdout, h.entered_on, s.window_days
    FROM audience_history h
    JOIN settings s ON s.audience = h.audience
    JOIN cohorts c ON c.audience = h.audience AND c.entered_on = h.entered_on
    WHERE c.first_synced <= COALESCE(h.left_on, {{ as_of }})
), bought AS (
    -- purchases per customer and day (the build's customer_purchase_days): comparing
    -- days, not timestamps, and joining only the spells that bought (then joining back)
    -- more than halved this step at a year of spells
    SELECT p.audience, p.member_key, p.entered_on, SUM(o.orders) AS orders, SUM(o.amount) AS revenue
    FROM spells p
    JOIN {{ purchase_days }} o ON o.customer_id = p.customer_id
         AND o.day > p.entered_on AND o.day <= p.entered_on + p.window_days
    GROUP BY p.audience, p.member_key, p.entered_on
)
SELECT p.audience, p.member_key, p.in_holdout, p.entered_on, p.window_days,
       b.orders IS NOT NULL AS converted,
       CAST(COALESCE(b.orders, 0) AS BIGINT) AS orders,
       CAST(COALESCE(b.revenue, 0) AS NUMERIC(18, 2)) AS revenue,
       p.entered_on + p.window_days <= {{ as_of }} AS complete
FROM spells p
LEFT JOIN bought b ON b.audience = p.audience AND b.member_key = p.member_key AND b.entered_on = p.entered_on
