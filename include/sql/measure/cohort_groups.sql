-- Internal: one row per audience, cohort (entered_on) and group (in_holdout) of the
-- measured spells of audience_history — spells during which their audience was synced
-- live at least once (a succeeded sync_runs row started on a day in [entered_on,
-- left_on or the as-of day]) — with how many members, how many bought in the conversion
-- window, and their orders, revenue and revenue's sum of squares (for Welch's interval).
-- A purchase is an order whose status is in segments.purchase_statuses, on a day (by
-- created_at) in (entered_on, entered_on + window_days]; revenue is its total_amount,
-- as customer_facts counts it (both read customer_purchase_days, the build's purchases
-- per customer and day). Both groups pass the same sync test, so control spells cover
-- the same days as treated ones; the group is the assignment (intention to treat),
-- whatever a platform did with the member. Members who bought nothing add 0 to every
-- sum, so only the spells that bought are joined to purchases, and the per-spell rows
-- never need to be kept.
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
), entries AS (
    -- the spells per audience, entry day, group and last day (a few thousand rows): one
    -- pass over the spells counts the members of every cohort without keeping a row each
    SELECT audience, entered_on, in_holdout, COALESCE(left_on, {{ as_of }}) AS until, COUNT(*) AS members
    FROM audience_history
    WHERE entered_on <= {{ as_of }}
    GROUP BY audience, entered_on, in_holdout, COALESCE(left_on, {{ as_of }})
), cohorts AS (
    -- per audience and entry day, the first live sync on or after it: a spell was synced
    -- when that day is not after its end (a join over the few cohorts, not the spells)
    SELECT c.audience, c.entered_on, MIN(y.day) AS first_synced, MIN(s.window_days) AS window_days
    FROM (SELECT DISTINCT audience, entered_on FROM entries) c
    JOIN settings s ON s.audience = c.audience
    JOIN synced y ON y.audience = c.audience AND y.day >= c.entered_on
    GROUP BY c.audience, c.entered_on
), bought AS (
    -- per measured spell that bought: comparing days, not timestamps. The day first in the
    -- grouping: PostgreSQL sorts to group, and then needs no second sort for buyers
    SELECT h.audience, h.entered_on, h.in_holdout, SUM(o.orders) AS orders, SUM(o.amount) AS revenue
    FROM audience_history h
    JOIN cohorts c ON c.audience = h.audience AND c.entered_on = h.entered_on
    JOIN {{ purchase_days }} o ON o.customer_id = h.customer_id
         AND o.day > h.entered_on AND o.day <= h.entered_on + c.window_days
    WHERE c.first_synced <= COALESCE(h.left_on, {{ as_of }})
    GROUP BY h.entered_on, h.in_holdout, h.audience, h.member_key
), buyers AS (
    SELECT audience, entered_on, in_holdout, COUNT(*) AS converted, SUM(orders) AS orders,
           SUM(revenue) AS revenue,
           SUM(CAST(revenue AS DOUBLE PRECISION) * CAST(revenue AS DOUBLE PRECISION)) AS revenue_squares
    FROM bought
    GROUP BY entered_on, in_holdout, audience
), cohorts_in AS (
    SELECT e.audience, e.entered_on, e.in_holdout, c.window_days, SUM(e.members) AS members
    FROM entries e
    JOIN cohorts c ON c.audience = e.audience AND c.entered_on = e.entered_on
    WHERE c.first_synced <= e.until
    GROUP BY e.audience, e.entered_on, e.in_holdout, c.window_days
)
SELECT m.audience, m.entered_on, m.in_holdout, m.window_days,
       CAST(m.members AS BIGINT) AS members,
       CAST(COALESCE(b.converted, 0) AS BIGINT) AS converted,
       CAST(COALESCE(b.orders, 0) AS BIGINT) AS orders,
       CAST(COALESCE(b.revenue, 0) AS NUMERIC(18, 2)) AS revenue,
       COALESCE(b.revenue_squares, 0) AS revenue_squares,
       m.entered_on + m.window_days <= {{ as_of }} AS complete
FROM cohorts_in m
LEFT JOIN buyers b ON b.audience = m.audience AND b.entered_on = m.entered_on AND b.in_holdout = m.in_holdout
