-- Internal: one row per measured spell of audience_history — a spell during which its
-- audience was synced live at least once (a succeeded sync_runs row started on a day
-- in [entered_on, left_on or the as-of day]) — with what the member bought in the
-- conversion window: purchases (orders whose status is in segments.purchase_statuses,
-- by created_at) on a day in (entered_on, entered_on + window_days], their number and
-- their total_amount (revenue as customer_facts counts it). Both groups pass the same
-- sync test, so control spells cover the same days as treated ones; group membership
-- is the assignment (intention to treat), whatever a platform did with the member.
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
), spells AS (
    SELECT h.audience, h.member_key, h.customer_id, h.in_holdout, h.entered_on, s.window_days
    FROM audience_history h
    JOIN settings s ON s.audience = h.audience
    WHERE h.entered_on <= {{ as_of }}
      AND EXISTS (SELECT 1 FROM synced y
                  WHERE y.audience = h.audience AND y.day >= h.entered_on
                    AND y.day <= COALESCE(h.left_on, {{ as_of }}))
), bought AS (
    SELECT p.audience, p.member_key, p.entered_on, COUNT(*) AS orders, SUM(o.total_amount) AS revenue
    FROM spells p
    JOIN {{ src('orders') }} o ON o.customer_id = p.customer_id
    WHERE o.status IN {{ purchase_statuses }}
      AND o.created_at >= p.entered_on + 1
      AND o.created_at < p.entered_on + p.window_days + 1
    GROUP BY p.audience, p.member_key, p.entered_on
)
SELECT p.audience, p.member_key, p.in_holdout, p.entered_on, p.window_days,
       b.orders IS NOT NULL AS converted,
       CAST(COALESCE(b.orders, 0) AS BIGINT) AS orders,
       CAST(COALESCE(b.revenue, 0) AS NUMERIC(18, 2)) AS revenue,
       p.entered_on + p.window_days <= {{ as_of }} AS complete
FROM spells p
LEFT JOIN bought b ON b.audience = p.audience AND b.member_key = p.member_key AND b.entered_on = p.entered_on
